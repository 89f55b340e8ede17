"""Several devices: a ('data',) mesh, the batch split over it, embedding tables row-sharded.

JAX's own SPMD (jax.sharding, GSPMD, jax.shard_map); no home-made communication.
  * `make_mesh(config.mesh.shape)`: a 1-D mesh with axis "data" (`DATA`), or None for one
    device (the unsharded code path, bit-identical to a run without this module).
  * `place_state` / `place_data`: every [N, D] table and the [N, ...] leaves of its
    row-optimizer state split by rows (device c holds rows [c N/n, (c+1) N/n)); dense
    tower parameters, optax state, step, key and frequency estimator replicated.
  * `mesh_context(mesh)` (`jax.set_mesh`) makes the mesh ambient: the functions below
    read it inside `jit`, where arrays carry no concrete sharding.
  * `gather_rows(table, ids, split_batch=True)`: each device reads the batch's rows it
    holds and a reduce-scatter leaves each device its part of the batch, so the tower
    and the loss run batch-parallel. (Constraining a plain `table[ids]` to the batch
    split makes GSPMD all-gather the whole table.) `update_rows`: each device applies
    the row optimizer to the ids in its row range.

What GSPMD does by itself (checked in compiled HLO, tests/test_sharding.py): a gather
`table[ids]` with replicated ids is a masked local gather plus an all-reduce of the
gathered rows, the row-optimizer scatter is local, the unchunked full softmax reduces
its [B, N/n] scores locally. Where it moves a table or a [B, N] score matrix instead, this
module has `jax.shard_map` versions that work on each device's rows and combine small
per-shard results:
  * `sharded_full_softmax` / `logsumexp_scores`: per-shard (`chunked`) log-sum-exp combined
    by a log-sum-exp over shards, explicit VJP (GSPMD all-gathers the table for the
    chunked loop);
  * `update_all_rows`: the full-softmax update of every row, shard-local (through the
    row optimizer with ids = arange(N), GSPMD all-reduces the whole table; the same
    happens to any row update of M >= N ids, which the optimizer combines densely);
  * `sharded_hard_exact`: per-shard draws, the shard picked with probability
    exp(lse_c - lse) (GSPMD all-gathers the [B, N] scores);
  * `sharded_topk`: per-shard `chunked.topk_batch`, merged by one top-k over n k candidates
    (GSPMD all-gathers the table for the chunked scan).
Each is the unsharded function when no mesh applies, so callers need no branch.

XLA:CPU caveat (simulated devices, `--xla_force_host_platform_device_count`): the CPU
client runs each device's program on a pool of max(cores, devices) threads, and a launch
blocks a pool thread once its device has 32 executions queued. A loop that dispatches
more than ~32 collective-bearing steps without waiting then starves the pool: the
all-reduce aborts with "Termination timeout ... Expected 4 threads to join the
rendezvous, but only 2 of them arrived". `DispatchThrottle` bounds the queue.

Several processes (hosts): `maybe_initialize_distributed()` first; the mesh then spans
every process's devices and placement builds global arrays from the (identical)
per-process values.

References: GSPMD (Xu et al. 2021); the JAX sharding and shard_map guides; row-sharded
embedding tables as in DLRM / TPU embedding (Naumov et al. 2019).
"""

from __future__ import annotations

import collections
import contextlib
import functools
import logging
import os
import re
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from jaxrec import chunked, losses, metrics, samplers

DATA = "data"

_log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------
# Processes, meshes, placement.


def maybe_initialize_distributed() -> bool:
  """Calls `jax.distributed.initialize` when launched as one of several processes.

  Must run before anything touches a device (first thing in the launcher). Triggers:
    * JAX_COORDINATOR_ADDRESS=host:port with JAX_NUM_PROCESSES and JAX_PROCESS_ID
      (explicit; the same command on every host, JAX_PROCESS_ID = 0..P-1);
    * a multi-task SLURM allocation (SLURM_NTASKS > 1) or an Open MPI launch
      (OMPI_MCA_orte_hnp_uri): JAX detects the coordinator and ids itself.
  On CPU the cross-process collectives use gloo. Returns True when it initialized.
  """
  addr = os.environ.get("JAX_COORDINATOR_ADDRESS")
  slurm = int(os.environ.get("SLURM_NTASKS", "1") or 1) > 1
  ompi = "OMPI_MCA_orte_hnp_uri" in os.environ
  if not (addr or slurm or ompi):
    return False
  if addr:
    try:
      num = int(os.environ["JAX_NUM_PROCESSES"])
      pid = int(os.environ["JAX_PROCESS_ID"])
    except (KeyError, ValueError) as err:
      raise ValueError(
          "JAX_COORDINATOR_ADDRESS is set, so JAX_NUM_PROCESSES and "
          "JAX_PROCESS_ID must be integers too; got "
          f"JAX_NUM_PROCESSES={os.environ.get('JAX_NUM_PROCESSES')!r}, "
          f"JAX_PROCESS_ID={os.environ.get('JAX_PROCESS_ID')!r}"
      ) from err
    if not 0 <= pid < num:
      raise ValueError(f"JAX_PROCESS_ID={pid} must be in [0, JAX_NUM_PROCESSES={num})")
  if jax.distributed.is_initialized():
    return False
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if addr:
    jax.distributed.initialize(addr, num_processes=num, process_id=pid)
  else:
    jax.distributed.initialize()
  return True


def make_mesh(shape=None) -> Mesh | None:
  """A 1-D ('data',) mesh over the first `shape[0]` devices (default: all of them).

  `shape` is `config.mesh.shape`: () or None for every device, or (n,). Returns None when
  that is a single device (the unsharded code path). Raises ValueError for more devices
  than exist or a shape with more than one axis.
  """
  shape = tuple(int(s) for s in shape) if shape else ()
  if len(shape) > 1:
    raise ValueError(
        f"mesh.shape={shape}: only a 1-D ('{DATA}',) mesh is supported; "
        "pass (n,) or () for all devices"
    )
  available = jax.device_count()
  n = shape[0] if shape else available
  if n < 1 or n > available:
    raise ValueError(
        f"mesh.shape={shape} needs {n} devices; {available} available "
        f"({jax.default_backend()}); valid: 1..{available} or () for all"
    )
  if n == 1:
    return None
  return Mesh(np.asarray(jax.devices()[:n]), (DATA,), axis_types=(AxisType.Auto,))


def mesh_context(mesh: Mesh | None):
  """`with mesh_context(mesh):` makes `mesh` the ambient mesh (`jax.set_mesh`) that the
  sharded functions here see inside jit; a no-op context for None (one device)."""
  return contextlib.nullcontext() if mesh is None else jax.set_mesh(mesh)


def ambient_mesh() -> Mesh | None:
  """Outside jit: the concrete mesh set by `mesh_context`, or None (none set, or 1 device)."""
  mesh = jax.sharding.get_mesh()
  return None if mesh.empty or _data_size(mesh) <= 1 else mesh


def _data_size(mesh) -> int:
  return int(dict(mesh.shape).get(DATA, 1)) if mesh is not None else 1


def _is_concrete(x) -> bool:
  return isinstance(x, jax.Array) and not isinstance(x, jax.core.Tracer)


def rows_mesh(x):
  """The mesh over whose "data" axis `x`'s rows are split, or None (unsharded path).

  A concrete array answers from its own sharding; inside jit the ambient mesh of
  `mesh_context` is used, if its "data" axis has > 1 device dividing x's rows evenly.
  """
  if _is_concrete(x):
    sh = x.sharding
    if (
        isinstance(sh, NamedSharding)
        and len(sh.spec)
        and sh.spec[0] == DATA
        and _data_size(sh.mesh) > 1
    ):
      return sh.mesh
  mesh = jax.sharding.get_abstract_mesh()
  n = _data_size(None if mesh.empty else mesh)
  if n > 1 and jnp.ndim(x) >= 1 and jnp.shape(x)[0] % n == 0:
    return mesh
  return None


def _put(x, sharding: NamedSharding):
  """device_put that also works across processes: a global array is resharded, a
  process-local value (the same on every process) is cut into this process's shards."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    if x.sharding.is_equivalent_to(sharding, x.ndim):
      return x
    return jax.device_put(x, sharding)
  if sharding.is_fully_addressable:
    return jax.device_put(x, sharding)
  host = np.asarray(x)
  return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])


def row_sharding(mesh: Mesh, num_rows: int) -> NamedSharding:
  """Rows split over "data" when they divide evenly, else replicated (with a warning)."""
  n = _data_size(mesh)
  if num_rows % n:
    _log.warning(
        "a table of %d rows does not divide over %d devices: it is replicated "
        "(pick a device count that divides it to shard it)",
        num_rows,
        n,
    )
    return NamedSharding(mesh, P())
  return NamedSharding(mesh, P(DATA))


def place_rows(tree, mesh: Mesh | None, num_rows: Optional[int] = None):
  """Row-shards every leaf whose leading dim is `num_rows` (default: each leaf's own);
  other leaves (scalars, small state) are replicated. Identity for mesh None."""
  if mesh is None:
    return tree
  rep = NamedSharding(mesh, P())

  def put(x):
    x = jnp.asarray(x)
    if x.ndim >= 1 and (num_rows is None or x.shape[0] == num_rows):
      return _put(x, row_sharding(mesh, x.shape[0]))
    return _put(x, rep)

  return jax.tree.map(put, tree)


def replicate(tree, mesh: Mesh | None):
  """Every leaf replicated on the mesh (identity for mesh None)."""
  if mesh is None:
    return tree
  rep = NamedSharding(mesh, P())
  return jax.tree.map(lambda x: _put(jnp.asarray(x), rep), tree)


def place_state(state, mesh: Mesh | None):
  """A `train.TrainState` with tables and their row-optimizer states row-sharded and
  everything else (step, key, dense params and optax state, freq) replicated."""
  if mesh is None:
    return state
  tables = {k: place_rows(v, mesh) for k, v in state.tables.items()}
  table_opt = {k: place_rows(v, mesh, state.tables[k].shape[0]) for k, v in state.table_opt.items()}
  rest = {
      k: replicate(getattr(state, k), mesh)
      for k in state._fields
      if k not in ("tables", "table_opt")
  }
  return state._replace(tables=tables, table_opt=table_opt, **rest)


def place_data(data, mesh: Mesh | None):
  """Training arrays replicated: every device draws the same batch ids from them (one
  replicated key), then keeps its part of the batch (`gather_rows(split_batch=True)`).
  O(E) per device; the tables are the big part."""
  return replicate(data, mesh)


def gather_rows(table_NxD, ids, *, split_batch: bool = False):
  """table_NxD[ids] -> ids.shape + (D,) for a row-sharded table, never moving the table.

  Each device reads the ids that fall in its row range (others give zeros) and one
  collective sums the per-device results: an all-reduce (result replicated), or with
  split_batch=True a reduce-scatter over the leading (batch) axis, so each device ends
  with only its 1/n of the batch (and 1/n of the traffic). (Constraining a plain `table[ids]` to the batch split instead lets GSPMD
  all-gather the whole table.) Ids must lie in [0, N) (out-of-range ids read zeros).
  One device, or a batch that does not divide evenly: `table_NxD[ids]` semantics.
  """
  mesh = rows_mesh(table_NxD)
  if mesh is None:
    return table_NxD[ids]
  n = _data_size(mesh)
  rows = table_NxD.shape[0] // n
  split = split_batch and jnp.ndim(ids) >= 1 and jnp.shape(ids)[0] % n == 0

  def local(table, ids):
    local_ids = ids - jax.lax.axis_index(DATA) * rows
    ok = (local_ids >= 0) & (local_ids < rows)
    got = jnp.take(table, jnp.where(ok, local_ids, 0), axis=0)
    got = jnp.where(ok[..., None], got, jnp.zeros((), got.dtype))
    if split:
      return jax.lax.psum_scatter(got, DATA, scatter_dimension=0, tiled=True)
    return jax.lax.psum(got, DATA)

  return jax.shard_map(
      local, mesh=mesh, in_specs=(P(DATA), P()), out_specs=P(DATA) if split else P()
  )(table_NxD, ids)


class DispatchThrottle:
  """Keeps at most `max_inflight` dispatched steps unfinished: call it with each step's
  output (e.g. the loss); it blocks on the output from `max_inflight` calls ago.

  Why: with simulated CPU devices XLA:CPU admits 32 queued executions per device; the
  33rd launch blocks a client pool thread (the pool has max(cores, devices) threads)
  while it waits, and the threads left cannot run every device's part of a collective,
  so the all-reduce rendezvous times out (observed on 2 cores with 4 devices and 100
  unsynchronised steps; 8 in flight never deadlocked). On GPU it only caps the queue,
  which is harmless. Dispatch stays asynchronous up to `max_inflight` steps ahead.
  """

  def __init__(self, max_inflight: int = 8):
    if not isinstance(max_inflight, int) or max_inflight < 1:
      raise ValueError(f"max_inflight={max_inflight!r} must be a positive int")
    self.max_inflight = max_inflight
    self._queue = collections.deque()

  @property
  def pending(self) -> int:
    """How many outputs are held, not yet waited on (at most `max_inflight`)."""
    return len(self._queue)

  def __call__(self, output) -> None:
    self._queue.append(output)
    while len(self._queue) > self.max_inflight:
      jax.block_until_ready(self._queue.popleft())


# --------------------------------------------------------------------------------------
# Full-catalogue computations that combine per-shard results.


def _local_lse(query_BxD, items_CxD, chunk_size):
  """log sum_j exp(q_b . v_j) over this shard's rows -> [B]."""
  if chunk_size is None:
    return jax.nn.logsumexp(jnp.dot(query_BxD, items_CxD.T), axis=1)
  return chunked.logsumexp_forward(query_BxD, items_CxD, chunk_size)


def _local_lse_grads(query_BxD, items_CxD, lse_B, g_B, chunk_size):
  """Cotangents of lse_b = log sum_j exp(q_b . v_j) from this shard's rows, with lse the
  *global* value: p_bj = exp(s_bj - lse_b) is then the catalogue softmax, so
  d q_b = sum_{j here} g_b p_bj v_j (a partial sum) and d v_j = sum_b g_b p_bj q_b (whole)."""
  if chunk_size is None:
    gp_BxC = g_B[:, None] * jnp.exp(jnp.dot(query_BxD, items_CxD.T) - lse_B[:, None])
    return jnp.dot(gp_BxC, items_CxD), jnp.dot(gp_BxC.T, query_BxD)
  return chunked.logsumexp_backward(query_BxD, items_CxD, lse_B, g_B, chunk_size)


def _combine_lse(lse_B):
  """Inside shard_map: log sum_c exp(lse_c) over the "data" shards -> [B], replicated."""
  m = jax.lax.pmax(lse_B, DATA)
  m = jnp.where(jnp.isfinite(m), m, 0.0)
  return m + jnp.log(jax.lax.psum(jnp.exp(lse_B - m), DATA))


# The sharded log-sum-exp has an explicit VJP (rather than autodiff through shard_map),
# so the one cross-device sum of the backward pass, psum of d query, is written out.
# check_vma=False: the per-shard loops start from constants (see shard_map's "vma").
@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _sharded_lse(query_BxD, items_NxD, mesh, chunk_size):
  return _sharded_lse_fwd(query_BxD, items_NxD, mesh, chunk_size)[0]


def _sharded_lse_fwd(query_BxD, items_NxD, mesh, chunk_size):
  fn = jax.shard_map(
      lambda q, v: _combine_lse(_local_lse(q, v, chunk_size)),
      mesh=mesh,
      in_specs=(P(), P(DATA)),
      out_specs=P(),
      check_vma=False,
  )
  lse_B = fn(query_BxD, items_NxD)
  return lse_B, (query_BxD, items_NxD, lse_B)


def _sharded_lse_bwd(mesh, chunk_size, residuals, g_B):
  def local(q, v, lse, g):
    dq, dv = _local_lse_grads(q, v, lse, g, chunk_size)
    return jax.lax.psum(dq, DATA), dv.astype(v.dtype)

  fn = jax.shard_map(
      local, mesh=mesh, in_specs=(P(), P(DATA), P(), P()), out_specs=(P(), P(DATA)), check_vma=False
  )
  return fn(*residuals, g_B)


_sharded_lse.defvjp(_sharded_lse_fwd, _sharded_lse_bwd)


def logsumexp_scores(query_BxD, items_NxD, *, chunk_size: Optional[int] = None):
  """lse_b = log sum_j exp(query_b . items_j) over all N rows -> [B] (differentiable).

  With items row-sharded: each device reduces its own rows (streamed in chunks as in
  `losses.full_softmax(..., chunk_size=)` when chunk_size is set) and the per-device
  values are combined by a log-sum-exp over devices; the backward pass recomputes each
  device's softmax with the global lse, keeps d items on the device of its rows and sums
  d query over devices. O(B D) floats cross devices, never the table or [B, N] scores.
  One device: the plain (or chunked) computation.
  """
  mesh = rows_mesh(items_NxD)
  if mesh is None:
    if chunk_size is None:
      return _local_lse(query_BxD, items_NxD, None)
    return chunked.logsumexp(query_BxD, items_NxD, chunk_size)
  return _sharded_lse(query_BxD, items_NxD, mesh, chunk_size)


def sharded_full_softmax(
    query_BxD,
    items_NxD,
    pos_ids,
    pos_weights=None,
    *,
    temperature=1.0,
    chunk_size: Optional[int] = None,
):
  """`losses.full_softmax` (same arguments and result, per-example loss [B]) for a
  row-sharded item table; on one device it *is* losses.full_softmax.

    loss_b = (sum_p w_bp) lse_b - sum_p w_bp s_{b,pos_bp},  s = q . v / T,
  with lse_b from `logsumexp_scores` (per-shard log-sum-exp, combined over shards) and
  the positives' rows gathered from their shards (GSPMD: masked gather + all-reduce of
  [B, P, D]). No device ever holds the whole table or a [B, N] score matrix.
  """
  mesh = rows_mesh(items_NxD)
  if mesh is None:
    return losses.full_softmax(
        query_BxD, items_NxD, pos_ids, pos_weights, temperature=temperature, chunk_size=chunk_size
    )
  # Same argument checks (shapes, dtypes, temperature, chunk_size) as the unsharded loss.
  static_t = temperature if isinstance(temperature, (int, float)) else 1.0
  jax.eval_shape(
      functools.partial(losses.full_softmax, temperature=static_t, chunk_size=chunk_size),
      query_BxD,
      items_NxD,
      pos_ids,
      pos_weights,
  )
  pos_ids = jnp.asarray(pos_ids)
  pos_BxP = pos_ids[:, None] if pos_ids.ndim == 1 else pos_ids
  if pos_weights is None:
    w_BxP = jnp.full(pos_BxP.shape, 1.0 / pos_BxP.shape[1], query_BxD.dtype)
  else:
    w_BxP = jnp.asarray(pos_weights, query_BxD.dtype)
  scaled_BxD = query_BxD / jnp.asarray(temperature, query_BxD.dtype)
  lse_B = logsumexp_scores(scaled_BxD, items_NxD, chunk_size=chunk_size)
  pos_BxPxD = gather_rows(items_NxD, jnp.clip(pos_BxP, 0, items_NxD.shape[0] - 1))
  pos_scores_BxP = jnp.einsum("bd,bpd->bp", scaled_BxD, pos_BxPxD)
  weighted_BxP = jnp.where(w_BxP != 0, w_BxP * pos_scores_BxP, 0.0)
  return jnp.sum(w_BxP, axis=1) * lse_B - jnp.sum(weighted_BxP, axis=1)


def sharded_hard_exact(
    key,
    query_BxD,
    items_NxD,
    num_samples: int,
    *,
    temperature=1.0,
    chunk_size: Optional[int] = None,
):
  """`samplers.hard_exact` for a row-sharded item table -> Negatives [B, K], exact.

  Two levels, as the unsharded sampler's chunks: device c draws K candidates per row
  from softmax(s/T) over its own rows (`samplers.hard_exact` on the shard, key
  fold_in(k_local, c)) and reports its lse_c; each slot then takes device c's candidate
  with probability exp(lse_c - lse) (Gumbel-max over the n values, from a key shared by
  all devices). P(j) = exp(lse_c - lse) exp(s_j/T - lse_c) = exp(s_j/T - lse): exactly
  the catalogue softmax, draws i.i.d. log_q_j = s_j/T - lse. Only [n, B] log-sum-exps and
  the chosen [B, K] ids / log_q cross devices. Same distribution as the unsharded
  sampler but a different random stream, so sharded and unsharded runs differ in their
  draws. One device: samplers.hard_exact itself.
  """
  mesh = rows_mesh(items_NxD)
  if mesh is None:
    return samplers.hard_exact(
        key, query_BxD, items_NxD, num_samples, temperature=temperature, chunk_size=chunk_size
    )
  n = _data_size(mesh)
  rows = items_NxD.shape[0] // n
  k_local, k_choice = jax.random.split(key)
  batch = query_BxD.shape[0]

  def local(k_local, k_choice, q, items_local):
    c = jax.lax.axis_index(DATA)
    neg = samplers.hard_exact(
        jax.random.fold_in(k_local, c),
        q,
        items_local,
        num_samples,
        temperature=temperature,
        chunk_size=chunk_size,
    )
    scaled = q / jnp.asarray(temperature, q.dtype)
    # lse_c from the first draw: log_q = s/T - lse_c  =>  lse_c = s/T - log_q.
    s0_B = jnp.sum(scaled * items_local[neg.ids[:, 0]], axis=1)
    lse_c_B = s0_B - neg.log_q[:, 0]
    lse_all_nxB = jax.lax.all_gather(lse_c_B, DATA)
    lse_B = jax.nn.logsumexp(lse_all_nxB, axis=0)
    gumbel = jax.random.gumbel(k_choice, (batch, num_samples, n), lse_B.dtype)
    choice_BxK = jnp.argmax(lse_all_nxB.T[:, None, :] + gumbel, axis=-1)
    mine = choice_BxK == c
    ids = jnp.where(mine, neg.ids + c * rows, 0)
    log_q = jnp.where(mine, neg.log_q + (lse_c_B - lse_B)[:, None], 0.0)
    return jax.lax.psum(ids, DATA).astype(jnp.int32), jax.lax.psum(log_q, DATA)

  # check_vma=False: the chunked sampler's scan starts from constants; nothing here is
  # differentiated (the train step stops gradients through negatives).
  fn = jax.shard_map(
      local, mesh=mesh, in_specs=(P(), P(), P(), P(DATA)), out_specs=(P(), P()), check_vma=False
  )
  ids, log_q = fn(k_local, k_choice, query_BxD, items_NxD)
  return samplers.Negatives(ids, log_q)


@functools.partial(jax.jit, static_argnames=("k", "chunk_size", "group", "mesh"))
def sharded_topk_batch(query_BxD, items_NxD, ex_rows_E, ex_cols_E, *, k, chunk_size, group, mesh):
  """`chunked.topk_batch` of one query batch, items row-sharded on `mesh` -> (vals_BxK,
  ids_BxK), replicated: each device ranks its own rows (excluded item ids shifted to its
  row range), then one top-k over the all-gathered [B, n k] per-device lists."""
  rows = items_NxD.shape[0] // _data_size(mesh)

  def local(q, items_local, ex_r, ex_c):
    offset = jax.lax.axis_index(DATA) * rows
    # Excluded columns of other shards fall outside [0, rows) and are dropped.
    vals, ids = chunked.topk_batch(
        q, items_local, ex_r, ex_c - offset, k=k, chunk_size=chunk_size, group=group
    )
    ids = jnp.where(ids >= 0, ids + offset, -1)
    vals_all = jax.lax.all_gather(vals, DATA, axis=1, tiled=True)  # [B, n k]
    ids_all = jax.lax.all_gather(ids, DATA, axis=1, tiled=True)
    top_vals, pos = jax.lax.top_k(vals_all, k)
    return top_vals, jnp.take_along_axis(ids_all, pos, axis=1)

  # check_vma=False: the chunked scan starts from unvarying constants (nothing to
  # differentiate here); the outputs are replicated by construction (all_gather + top_k).
  return jax.shard_map(
      local, mesh=mesh, in_specs=(P(), P(DATA), P(), P()), out_specs=(P(), P()), check_vma=False
  )(query_BxD, items_NxD, ex_rows_E, ex_cols_E)


def sharded_topk(
    query_QxD,
    items_NxD,
    k,
    *,
    exclude_rows=None,
    exclude_cols=None,
    chunk_size=None,
    query_batch=None,
    group=None,
):
  """`metrics.topk` (same arguments and numpy result) for a row-sharded item table.

  Each device runs the chunked top-k of `metrics.topk` over its own rows (excluded
  pairs shifted to its row range); the n per-device lists [B, k] are merged with one
  top-k over their n k entries, exact since every global top-k item is in its own
  shard's top-k. Per query batch only O(n B k) values cross devices. One device (or
  rows that do not divide evenly): metrics.topk itself.
  """
  chunk_size = metrics.DEFAULT_CHUNK_SIZE if chunk_size is None else chunk_size
  query_batch = metrics.DEFAULT_QUERY_BATCH if query_batch is None else query_batch
  group = metrics.DEFAULT_GROUP if group is None else group
  mesh = rows_mesh(items_NxD)
  if mesh is None:
    return metrics.topk(
        query_QxD,
        items_NxD,
        k,
        exclude_rows=exclude_rows,
        exclude_cols=exclude_cols,
        chunk_size=chunk_size,
        query_batch=query_batch,
        group=group,
    )
  num_queries, num_items = jnp.shape(query_QxD)[0], jnp.shape(items_NxD)[0]
  if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 < k <= num_items:
    raise ValueError(f"k={k!r} must be an int in [1, N={num_items}]")
  if (exclude_rows is None) != (exclude_cols is None):
    raise ValueError("exclude_rows and exclude_cols must be given together")
  rows = cols = np.zeros(0, np.int64)
  if exclude_rows is not None:
    rows = np.asarray(exclude_rows).astype(np.int64).ravel()
    cols = np.asarray(exclude_cols).astype(np.int64).ravel()
    if rows.shape != cols.shape:
      raise ValueError(
          f"exclude_rows {rows.shape} and exclude_cols {cols.shape} must have " "the same length"
      )
    for ids, upper, what in (
        (rows, num_queries, "exclude_rows"),
        (cols, num_items, "exclude_cols"),
    ):
      if ids.size and (ids.min() < 0 or ids.max() >= upper):
        raise ValueError(f"{what} has ids outside [0, {upper})")
  if num_queries == 0:
    return np.zeros((0, k), np.float32), np.zeros((0, k), np.int32)
  if not isinstance(mesh, Mesh):  # the ambient mesh: its concrete devices
    mesh = jax.sharding.get_mesh()
  query = jnp.asarray(query_QxD, jnp.float32)
  items = _put(jnp.asarray(items_NxD, jnp.float32), NamedSharding(mesh, P(DATA)))
  batch = min(query_batch, num_queries)
  parts = chunked.split_exclusions(rows, cols, num_queries, batch)
  vals_out, ids_out = [], []
  for b, (ex_r, ex_c) in enumerate(parts):
    q = query[b * batch : (b + 1) * batch]
    real = q.shape[0]
    if real < batch:
      q = jnp.pad(q, ((0, batch - real), (0, 0)))
    vals, ids = sharded_topk_batch(
        q,
        items,
        jnp.asarray(ex_r),
        jnp.asarray(ex_c),
        k=k,
        chunk_size=chunk_size,
        group=group,
        mesh=mesh,
    )
    vals_out.append(np.asarray(vals)[:real])
    ids_out.append(np.asarray(ids)[:real])
  return np.concatenate(vals_out), np.concatenate(ids_out)


def _state_specs(opt_state, num_rows):
  return jax.tree.map(
      lambda x: P(DATA) if jnp.ndim(x) >= 1 and jnp.shape(x)[0] == num_rows else P(), opt_state
  )


def update_rows(row_opt, table_NxD, opt_state, ids_M, grads_MxD, step):
  """`row_opt.update(table, state, ids, grads, step)` for a row-sharded table: every
  device applies the update to the ids in its own row range (the others become
  out-of-range ids, which a RowOptimizer drops), so the table and its state never move;
  only the [M, D] gradients are gathered if the batch was split. Exact: rows are
  independent and all copies of an id land on the same device, where they are summed.
  Needed because a row optimizer may combine M >= N ids densely ([N, D] scatter-add),
  which GSPMD turns into an all-reduce of whole-table buffers. One device: the update.
  """
  mesh = rows_mesh(table_NxD)
  if mesh is None:
    return row_opt.update(table_NxD, opt_state, ids_M, grads_MxD, step)
  rows = table_NxD.shape[0] // _data_size(mesh)
  specs = _state_specs(opt_state, table_NxD.shape[0])

  def local(table, state, ids, grads, step):
    local_ids = ids - jax.lax.axis_index(DATA) * rows
    local_ids = jnp.where((local_ids >= 0) & (local_ids < rows), local_ids, rows)
    return row_opt.update(table, state, local_ids, grads, step)

  fn = jax.shard_map(
      local, mesh=mesh, in_specs=(P(DATA), specs, P(), P(), P()), out_specs=(P(DATA), specs)
  )
  return fn(table_NxD, opt_state, ids_M, grads_MxD, step)


def update_all_rows(row_opt, table_NxD, opt_state, grads_NxD, step):
  """`row_opt.update(table, state, arange(N), grads, step)` (every row touched, as in
  the full-softmax step) without moving the table: on a mesh each device updates its
  own rows with its own slice of the gradient (rows are independent under a row-wise
  optimizer), so nothing crosses devices. One device: the plain update.
  """
  mesh = rows_mesh(table_NxD)
  num_rows = table_NxD.shape[0]
  if mesh is None:  # ids None: every row in order, dense math (jaxrec.tables)
    return row_opt.update(table_NxD, opt_state, None, grads_NxD, step)
  state_specs = _state_specs(opt_state, num_rows)

  def local(table, state, grads, step):
    return row_opt.update(table, state, None, grads, step)

  fn = jax.shard_map(
      local,
      mesh=mesh,
      in_specs=(P(DATA), state_specs, P(DATA), P()),
      out_specs=(P(DATA), state_specs),
  )
  return fn(table_NxD, opt_state, grads_NxD, step)


# --------------------------------------------------------------------------------------
# Inspecting what GSPMD did (tests, benchmarks).


_COLLECTIVE_RE = re.compile(
    r" = (.+?) (all-gather|all-reduce|all-to-all|collective-permute|reduce-scatter)"
    r"(?:-start)?\("
)
_SHAPE_RE = re.compile(r"[a-z]+[0-9]*\[([0-9,]*)\]")


def collectives(hlo_text: str) -> list[tuple[str, list[tuple[int, ...]]]]:
  """(op, [operand shapes]) for every collective in compiled HLO text
  (`jax.jit(f).lower(...).compile().as_text()`)."""
  out = []
  for line in hlo_text.splitlines():
    m = _COLLECTIVE_RE.search(line)
    if m:
      shapes = [tuple(int(d) for d in s.split(",") if d) for s in _SHAPE_RE.findall(m.group(1))]
      out.append((m.group(2), shapes))
  return out


def largest_collective(hlo_text: str) -> int:
  """Elements in the largest single buffer any collective of the program moves."""
  sizes = [int(np.prod(s)) if s else 1 for _, shapes in collectives(hlo_text) for s in shapes]
  return max(sizes, default=0)


def cpu_devices_env(num_devices: int, env: Optional[dict] = None) -> dict:
  """A copy of `env` (default os.environ) whose XLA_FLAGS simulate `num_devices` CPU
  devices, for a subprocess (the device count is fixed when JAX starts). Unlike
  xla_flags.add_defaults, it replaces a device count already there: the caller asked for
  this one, and the other XLA flags are kept."""
  env = dict(os.environ if env is None else env)
  flags = [
      f
      for f in env.get("XLA_FLAGS", "").split()
      if not f.startswith("--xla_force_host_platform_device_count")
  ]
  env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={num_devices}"])
  env.setdefault("JAX_PLATFORMS", "cpu")
  return env

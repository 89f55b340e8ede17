"""The train step: device data, TrainState, init, the jitted step, embeddings for evaluation.

One step (`train_step`, jitted and donated as `jitted_train_step`, returns
`(state, metrics)`):

  batch on device -> query (MF user row, or the DNN over a bag of the user's other items)
  -> negatives (`samplers.REGISTRY`) -> loss (`losses.REGISTRY`) + gravity + L2
  -> gradients w.r.t. the rows the step read -> row-wise optimizer on those rows of each
  table (in place, donated) and optax on the dense tower.

The item rows the step reads are one block, `item_rows_MxD` for the ids `ItemBlock.ids_M`:
the batch's positives then its negatives (M = B + K or B + B K), or, when the loss or
gravity reads every item, the whole table (ids_M = arange(N), the dense path). The block is
updated once, so an id drawn as a positive and as a negative combines its gradients
before the row optimizer sees them.

Side features (`ModelSpec.user_features` / `item_features`): DeviceData holds each user's
and item's encoded features; the query reads the batch users' (`models.FeatureTowers`),
and every item row the step scores is its id row + `models.item_offsets` of its features
(the feature tables are dense params; the id rows keep the sparse update).

Everything is a pure function of (config, seed): per-step randomness is
`fold_in(key, step)`, so a run resumed from a checkpoint replays the same batches.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxrec import losses, models, samplers, sharding, tables
from jaxrec.config import ModelSpec, StepSpec


class DeviceData(NamedTuple):
  """Device-resident training data; batches are drawn from it inside the jitted step."""

  e_users: jax.Array  # [E] int32, interactions sorted by user
  e_items: jax.Array  # [E] int32
  offsets: jax.Array  # [U+1] int32, user u's interactions are e[offsets[u]:offsets[u+1]]
  item_counts: jax.Array  # [N] float32 train counts
  pop_order: jax.Array  # [N] int32 item ids by decreasing train count (log_uniform ranks)
  unigram: Any  # samplers.UnigramTable built once (samplers that read it), or None
  # Side features per dense id (`jaxrec.data.features.Features`): vocabulary ids [R, S]
  # (0: unknown) and numeric inputs [R, 2G]; None when the model reads none.
  user_cat: Any = None
  user_num: Any = None
  item_cat: Any = None
  item_num: Any = None


def _feature_arrays(feats, decls, side: str):
  """(cat, num) device arrays of one side's features, checked against the spec's decls."""
  if not decls:
    return None, None
  if feats is None or tuple(feats.decls) != tuple(decls):
    raise ValueError(
        f"the model reads {side} features {[d.name for d in decls]} but the training data "
        f"carry {None if feats is None else [d.name for d in feats.decls]} (load the data "
        "with the same config.data: jaxrec.data.load_data attaches them)"
    )
  return jnp.asarray(feats.cat, jnp.int32), jnp.asarray(feats.num, jnp.float32)


def device_data(train, spec: Optional[StepSpec] = None) -> DeviceData:
  """`train` Interactions -> DeviceData (the unigram table when spec's sampler reads it;
  the side features the spec's model reads)."""
  unigram_alpha = None if spec is None else spec.unigram_alpha
  order = np.lexsort((train.item_ids, train.user_ids))
  users = train.user_ids[order].astype(np.int32)
  items = train.item_ids[order].astype(np.int32)
  offsets = np.zeros(train.num_users + 1, np.int64)
  np.cumsum(np.bincount(users, minlength=train.num_users), out=offsets[1:])
  counts = np.bincount(items, minlength=train.num_items).astype(np.float32)
  pop_order = np.argsort(-counts, kind="stable").astype(np.int32)
  table = None if unigram_alpha is None else samplers.unigram_table(counts, unigram_alpha)
  m = None if spec is None else spec.model
  user_cat, user_num = _feature_arrays(
      train.user_features, () if m is None else m.user_features, "user"
  )
  item_cat, item_num = _feature_arrays(
      train.item_features, () if m is None else m.item_features, "item"
  )
  return DeviceData(
      jnp.asarray(users),
      jnp.asarray(items),
      jnp.asarray(offsets.astype(np.int32)),
      jnp.asarray(counts),
      jnp.asarray(pop_order),
      table,
      user_cat,
      user_num,
      item_cat,
      item_num,
  )


class TrainState(NamedTuple):
  step: jax.Array  # int32 scalar
  key: jax.Array  # PRNG key data (uint32[2]); per step: fold_in(key, step)
  tables: dict  # "query" (users for MF, input items for DNN), "item": [rows, D]
  table_opt: dict  # name -> row-optimizer state
  dense: Any  # query tower params ({} for MF)
  dense_opt: Any  # optax state
  # The sampler's state: samplers.FreqState (uses_freq), the sampler's own state
  # (`Sampler.init_state`: KernelTree, NegativeCache), else (). (Named freq, its first
  # use: checkpoints store the field by name.)
  freq: Any
  first_bad_step: jax.Array  # int32, -1 while every loss so far was finite


_DENSE_OPTIMIZERS = {"sgd": optax.sgd, "adagrad": optax.adagrad, "adam": optax.adam}


def _optimizers(spec: StepSpec):
  t = spec.train
  return (
      tables.get_row_optimizer(t.optimizer, t.learning_rate),
      _DENSE_OPTIMIZERS[t.optimizer](t.learning_rate),
  )


def init_state(
    spec: StepSpec,
    config,
    num_users: int,
    num_items: int,
    seed: int,
    freq_buckets: Optional[int] = None,
) -> TrainState:
  """Tables ~ N(0, model.init_scale^2), the tower's init, empty optimizer states.
  freq_buckets (in-batch frequency estimator): default sampler.freq_buckets, and
  2 x num_items where that is 0."""
  if freq_buckets is None:
    freq_buckets = int(config.sampler.freq_buckets) or 2 * num_items
  dim = int(config.model.dim)
  model = models.REGISTRY[spec.model.name]
  k_query, k_item, k_dense, k_train = jax.random.split(jax.random.PRNGKey(seed), 4)
  scale = float(config.model.init_scale)
  num_query_rows = num_items if model.query_table == "items" else num_users
  tabs = {
      "query": models.init_table(k_query, num_query_rows, dim, scale),
      "item": models.init_table(k_item, num_items, dim, scale),
  }
  row_opt, dense_opt = _optimizers(spec)
  dense = model.init_dense(k_dense, spec.model, dim)
  freq = samplers.freq_init(freq_buckets) if spec.uses_freq else ()
  if spec.sampler_state:
    freq = spec.sampler.entry.init_state(_maybe_normalize(spec.model, tabs["item"]), spec.sampler)
  return TrainState(
      step=jnp.zeros((), jnp.int32),
      key=k_train,
      tables=tabs,
      table_opt={k: row_opt.init(v) for k, v in tabs.items()},
      dense=dense,
      dense_opt=dense_opt.init(dense),
      freq=freq,
      first_bad_step=jnp.full((), -1, jnp.int32),
  )


# --------------------------------------------------------------------------------------
# Batches.


class Batch(NamedTuple):
  """B training pairs: e_B indexes the interactions (sorted by user)."""

  e_B: jax.Array
  users_B: jax.Array
  pos_ids_B: jax.Array


def _mix32(h):
  """murmur3's 32-bit finaliser (Appleby): an avalanching bijection of uint32."""
  h = h ^ (h >> 16)
  h = h * jnp.uint32(0x85EBCA6B)
  h = h ^ (h >> 13)
  h = h * jnp.uint32(0xC2B2AE35)
  return h ^ (h >> 16)


def feistel_permute(key, positions, n: int, rounds: int = 4):
  """pi(positions) for a keyed pseudo-random permutation pi of [0, n), O(1) per position:
  a balanced Feistel network on 2h bits (2^(2h) >= n, at most 4n) with round function
  mix32(r ^ k_i) (4 rounds: Luby & Rackoff's construction), walked along its cycle until it
  lands in [0, n) (Black & Rogaway 2002), so no [n] permutation is ever built."""
  bits = max(2, (int(n) - 1).bit_length())
  half = (bits + 1) // 2
  mask = jnp.uint32((1 << half) - 1)
  round_keys = jax.random.bits(key, (rounds,), jnp.uint32)

  def encrypt(x):
    left, right = x >> half, x & mask
    for i in range(rounds):
      left, right = right, left ^ (_mix32(right ^ round_keys[i]) & mask)
    return (left << half) | right

  def walk(x):
    return jnp.where(x >= n, encrypt(x), x)

  x = encrypt(positions.astype(jnp.uint32))
  x = jax.lax.while_loop(lambda x: jnp.any(x >= n), walk, x)
  return x.astype(jnp.int32)


def sample_batch(spec: StepSpec, data: DeviceData, key, step, run_key=None) -> Batch:
  """B interactions: uniform with replacement ("random", from the step's `key`), or the
  step's slice of its epoch's permutation of the interactions ("epoch", dropping each
  epoch's last partial batch): a Feistel permutation (`feistel_permute`) keyed by the run's
  `run_key` and the epoch, the same for every step of an epoch, O(B) a step."""
  num_e = data.e_items.shape[0]
  batch_size = spec.train.batch_size
  if spec.train.batching == "random":
    e_B = jax.random.randint(key, (batch_size,), 0, num_e)
  else:
    if run_key is None:
      raise ValueError("sample_batch: train.batching=epoch needs the run's key (run_key)")
    steps_per_epoch = max(num_e // batch_size, 1)
    epoch, within = step // steps_per_epoch, step % steps_per_epoch
    # a stream of its own: fold_in(run_key, step) is the steps' (uint32 data, never 2^32-1)
    epoch_key = jax.random.fold_in(jax.random.fold_in(run_key, 0xFFFFFFFF), epoch)
    slots_B = within * batch_size + jnp.arange(batch_size)
    e_B = feistel_permute(epoch_key, slots_B % num_e, num_e)
  return Batch(e_B, data.e_users[e_B], data.e_items[e_B])


def sample_bag(spec: StepSpec, data: DeviceData, key, e_B, users_B):
  """-> (bag_ids_BxL, bag_mask_BxL): up to L = max_bag of the user's *other* training
  items (the target is left out).

  A user with n items has n - 1 candidates: all of them when n - 1 <= L, otherwise L
  uniform draws with replacement (an unbiased estimate of the mean of the full bag)."""
  bag_len = spec.model.max_bag
  start_B = data.offsets[users_B]
  n_other_B = data.offsets[users_B + 1] - start_B - 1
  target_pos_B = e_B - start_B
  slots_1xL = jnp.arange(bag_len)[None, :]
  u_BxL = jax.random.uniform(key, (users_B.shape[0], bag_len))
  drawn_BxL = jnp.floor(u_BxL * jnp.maximum(n_other_B, 1)[:, None]).astype(jnp.int32)
  small_Bx1 = (n_other_B <= bag_len)[:, None]
  pos_BxL = jnp.where(small_Bx1, slots_1xL, drawn_BxL)
  mask_BxL = jnp.where(small_Bx1, slots_1xL < n_other_B[:, None], n_other_B[:, None] > 0)
  pos_BxL = jnp.where(pos_BxL >= target_pos_B[:, None], pos_BxL + 1, pos_BxL)  # skip target
  idx_BxL = jnp.clip(start_B[:, None] + pos_BxL, 0, data.e_items.shape[0] - 1)
  return data.e_items[idx_BxL], mask_BxL


def draw_negatives(spec: StepSpec, key, inputs: samplers.SamplerInputs) -> samplers.Negatives:
  """The registered sampler's draw; ids and log_q are constants of the loss."""
  neg = spec.sampler.entry.draw(key, inputs, spec.sampler)
  return samplers.Negatives(jax.lax.stop_gradient(neg.ids), jax.lax.stop_gradient(neg.log_q))


# --------------------------------------------------------------------------------------
# The step.


def _l2_normalize(x):
  return x * jax.lax.rsqrt(jnp.sum(x * x, axis=-1, keepdims=True) + 1e-12)


def _maybe_normalize(spec: ModelSpec, x):
  return _l2_normalize(x) if spec.normalize else x


def _query(spec: ModelSpec, dense, query_rows, bag_mask_BxL, user_feats=None):
  """query_BxD from the gathered query rows: [B,D] user rows, or [B,L,D] bag rows (and
  the batch users' side features, (cat, num) or None)."""
  model = models.REGISTRY[spec.name]
  x_BxD = query_rows if bag_mask_BxL is None else models.pool_rows(query_rows, bag_mask_BxL)
  return _maybe_normalize(spec, model.apply_dense(dense, x_BxD, spec, user_feats))


def _user_feats(spec: ModelSpec, data: DeviceData, users):
  """(cat, num) side features of the users (None: the model reads none)."""
  if not spec.user_features:
    return None
  return data.user_cat[users], data.user_num[users]


def _items(spec: ModelSpec, dense, rows_MxD, data: DeviceData, ids_M=None):
  """Item embeddings as scored: id rows + the item features' offsets (`models.item_offsets`;
  ids_M None: every item), L2-normalised when the model says so."""
  if spec.item_features:
    cat = data.item_cat if ids_M is None else data.item_cat[ids_M]
    num = data.item_num if ids_M is None else data.item_num[ids_M]
    rows_MxD = rows_MxD + models.item_offsets(dense, spec, cat, num, rows_MxD.shape[-1])
  return _maybe_normalize(spec, rows_MxD)


class ItemBlock(NamedTuple):
  """The item rows a step reads and updates: `ids_M`, and where the batch's positives
  and negatives sit among them (`pos_slot_B`, `neg_slot` [K] or [B,K]). `all_rows`: the
  block is the whole table (ids_M = arange(N), slots = ids)."""

  ids_M: jax.Array
  pos_slot_B: jax.Array
  neg_slot: Optional[jax.Array]
  all_rows: bool


def item_block(pos_ids_B, neg_ids, num_items: int, all_rows: bool) -> ItemBlock:
  """Whole table, or [positives; negatives] with their slots named."""
  if all_rows:
    return ItemBlock(jnp.arange(num_items, dtype=jnp.int32), pos_ids_B, neg_ids, True)
  batch = pos_ids_B.shape[0]
  if neg_ids is None:
    return ItemBlock(pos_ids_B, jnp.arange(batch), None, False)
  ids_M = jnp.concatenate([pos_ids_B, neg_ids.reshape(-1)])
  neg_slot = batch + jnp.arange(neg_ids.size).reshape(neg_ids.shape)
  return ItemBlock(ids_M, jnp.arange(batch), neg_slot, False)


def _read_rows(table_NxD, block: ItemBlock):
  """[M,D] rows of the block: the table itself, or each device's gathered rows."""
  return table_NxD if block.all_rows else sharding.gather_rows(table_NxD, block.ids_M)


def _pick(rows_MxD, slot, block: ItemBlock):
  """rows at the given slots of the block (on the whole, row-sharded table: each
  device's rows, `sharding.gather_rows`)."""
  return sharding.gather_rows(rows_MxD, slot) if block.all_rows else rows_MxD[slot]


def _write_rows(row_opt, table_NxD, opt_state, block: ItemBlock, grads_MxD, step):
  """One row-optimizer update of the block's rows (duplicate ids combined)."""
  if block.all_rows:  # every row touched: each device updates its own rows
    return sharding.update_all_rows(row_opt, table_NxD, opt_state, grads_MxD, step)
  return sharding.update_rows(
      row_opt, table_NxD, opt_state, block.ids_M, grads_MxD.reshape(-1, table_NxD.shape[-1]), step
  )


def step_keys(state: TrainState):
  """The step's keys (batch, bag, negatives): fold_in(run key, step), split in three."""
  return jax.random.split(jax.random.fold_in(state.key, state.step), 3)


def step_batch(spec: StepSpec, data: DeviceData, state: TrainState) -> Batch:
  """The B training pairs `train_step` draws at state.step."""
  return sample_batch(spec, data, step_keys(state)[0], state.step, state.key)


def train_step(spec: StepSpec, state: TrainState, data: DeviceData):
  """One optimisation step -> (new_state, {"loss": mean per-example loss}). Jitted by
  `jitted_train_step`."""
  item_table_NxD, query_table = state.tables["item"], state.tables["query"]
  num_items, num_query_rows = item_table_NxD.shape[0], query_table.shape[0]
  _, k_bag, k_neg = step_keys(state)
  batch = step_batch(spec, data, state)
  pos_ids_B = batch.pos_ids_B

  # The query side: user ids (MF) or the bag of the user's other items (DNN). Each device
  # gathers the batch's rows it holds; a reduce-scatter leaves each device its part of the
  # batch, so the tower and the loss run batch-parallel.
  if models.REGISTRY[spec.model.name].query_table == "items":
    query_ids, bag_mask_BxL = sample_bag(spec, data, k_bag, batch.e_B, batch.users_B)
  else:
    query_ids, bag_mask_BxL = batch.users_B, None
  query_rows = sharding.gather_rows(query_table, query_ids, split_batch=True)
  user_feats = _user_feats(spec.model, data, batch.users_B)

  freq = state.freq
  if spec.uses_freq:
    freq = samplers.freq_update(freq, pos_ids_B, state.step, alpha=spec.sampler.freq_alpha)

  neg = pos_log_q = None
  if spec.draws_negatives:
    entry = spec.sampler.entry
    query_sg_BxD = items_sg_NxD = None
    if entry.needs_scores:
      query_sg_BxD = jax.lax.stop_gradient(
          _query(spec.model, state.dense, query_rows, bag_mask_BxL, user_feats)
      )
      items_sg_NxD = jax.lax.stop_gradient(_items(spec.model, state.dense, item_table_NxD, data))
    inputs = samplers.SamplerInputs(
        num_items,
        pos_ids_B,
        freq,
        query_sg_BxD,
        items_sg_NxD,
        data.unigram,
        data.pop_order,
        state=freq if spec.sampler_state else None,
    )
    neg = draw_negatives(spec, k_neg, inputs)
    if spec.correct_positive:
      pos_log_q = jax.lax.stop_gradient(entry.pos_log_q(inputs, spec.sampler))

  block = item_block(pos_ids_B, None if neg is None else neg.ids, num_items, spec.reads_all_items)
  item_rows_MxD = _read_rows(item_table_NxD, block)
  loss_entry = losses.REGISTRY[spec.loss.name]

  def loss_fn(dense, query_rows, item_rows_MxD):
    query_BxD = _query(spec.model, dense, query_rows, bag_mask_BxL, user_feats)
    rows_MxD = _items(
        spec.model, dense, item_rows_MxD, data, None if block.all_rows else block.ids_M
    )
    pos_BxD = _pick(rows_MxD, block.pos_slot_B, block)
    inputs = losses.LossInputs(
        pos_ids_B,
        pos_BxD,
        neg_ids=None if neg is None else neg.ids,
        neg_rows=None if neg is None else _pick(rows_MxD, block.neg_slot, block),
        neg_log_q=neg.log_q if neg is not None and spec.use_logq else None,
        items_NxD=rows_MxD if block.all_rows else None,
        full_softmax=sharding.sharded_full_softmax,
        pos_log_q=pos_log_q,
    )
    loss = jnp.mean(loss_entry.fn(query_BxD, inputs, spec.loss))
    total = loss
    if spec.loss.gravity > 0:
      total = total + spec.loss.gravity * losses.gravity(query_BxD, rows_MxD)
    if spec.loss.l2 > 0:
      total = total + spec.loss.l2 * (
          jnp.mean(jnp.sum(query_BxD**2, -1)) + jnp.mean(jnp.sum(pos_BxD**2, -1))
      )
    return total, loss

  (_, loss), (g_dense, g_query, g_items_MxD) = jax.value_and_grad(
      loss_fn, argnums=(0, 1, 2), has_aux=True
  )(state.dense, query_rows, item_rows_MxD)

  row_opt, dense_opt = _optimizers(spec)
  q_ids = query_ids.reshape(-1)
  if bag_mask_BxL is not None:  # padding slots update nothing: the out-of-range id is dropped
    q_ids = jnp.where(bag_mask_BxL.reshape(-1), q_ids, num_query_rows)
  # Each device updates the rows it holds (sharding.update_rows: the table never moves).
  new_q, new_q_opt = sharding.update_rows(
      row_opt,
      query_table,
      state.table_opt["query"],
      q_ids,
      g_query.reshape(-1, query_table.shape[-1]),
      state.step,
  )
  new_i, new_i_opt = _write_rows(
      row_opt, item_table_NxD, state.table_opt["item"], block, g_items_MxD, state.step
  )
  if spec.sampler_state:  # O(rows touched): the tree / cache follows the updated rows
    scored = functools.partial(_maybe_normalize, spec.model)
    update = samplers.StateUpdate(
        block.ids_M,
        jax.lax.stop_gradient(scored(item_rows_MxD)),
        scored(_read_rows(new_i, block)),
        lambda ids: scored(sharding.gather_rows(new_i, ids)),
        block.all_rows,
        item_table_NxD.shape[0],
    )
    freq = spec.sampler.entry.update_state(freq, update, spec.sampler)
  if jax.tree.leaves(state.dense):
    upd, new_dense_opt = dense_opt.update(g_dense, state.dense_opt, state.dense)
    new_dense = optax.apply_updates(state.dense, upd)
  else:
    new_dense, new_dense_opt = state.dense, state.dense_opt

  finite = jnp.isfinite(loss)
  first_bad = jnp.where((state.first_bad_step < 0) & ~finite, state.step, state.first_bad_step)
  new_state = TrainState(
      step=state.step + 1,
      key=state.key,
      tables={"query": new_q, "item": new_i},
      table_opt={"query": new_q_opt, "item": new_i_opt},
      dense=new_dense,
      dense_opt=new_dense_opt,
      freq=freq,
      first_bad_step=first_bad,
  )
  if spec.train.skip_nonfinite:
    skipped = state._replace(step=state.step + 1, first_bad_step=first_bad)
    new_state = jax.lax.cond(finite, lambda: new_state, lambda: skipped)
  return new_state, {"loss": loss}


# keep_unused: a donated buffer the step does not read (a kernel-tree level it rebuilds from
# its children) would otherwise be pruned from the call, and its output would get a new
# buffer each step, losing the buffer's huge pages (`host_malloc.huge_pages`).
@functools.partial(jax.jit, static_argnums=0, donate_argnums=1, keep_unused=True)
def jitted_train_step(spec: StepSpec, state: TrainState, data: DeviceData):
  return train_step(spec, state, data)


# --------------------------------------------------------------------------------------
# Embeddings for evaluation.


def query_embeddings(spec: StepSpec, state: TrainState, data: DeviceData):
  """[U, D] query embeddings: MF user rows, or the DNN over each user's full train bag
  (with the users' side features). Jitted on the model spec alone, so the strategies of a
  sweep (same model, other losses and samplers) share one compilation."""
  feats = None if not spec.model.user_features else (data.user_cat, data.user_num)
  if models.REGISTRY[spec.model.name].query_table == "items":
    return _bag_query_embeddings(
        spec.model,
        state.tables["query"],
        state.dense,
        data.e_items,
        data.e_users,
        data.offsets,
        feats,
    )
  return _row_query_embeddings(spec.model, state.tables["query"], state.dense, feats)


@functools.partial(jax.jit, static_argnums=0)
def _row_query_embeddings(spec: ModelSpec, table_UxD, dense, feats=None):
  model = models.REGISTRY[spec.name]
  return _maybe_normalize(spec, model.apply_dense(dense, table_UxD, spec, feats))


@functools.partial(jax.jit, static_argnums=0)
def _bag_query_embeddings(spec: ModelSpec, table_NxD, dense, e_items, e_users, offsets, feats=None):
  num_users = offsets.shape[0] - 1
  rows_ExD = table_NxD[e_items]
  summed_UxD = jax.ops.segment_sum(rows_ExD, e_users, num_segments=num_users)
  counts_U = (offsets[1:] - offsets[:-1]).astype(jnp.float32)
  pooled_UxD = summed_UxD / jnp.maximum(counts_U, 1.0)[:, None]
  model = models.REGISTRY[spec.name]
  return _maybe_normalize(spec, model.apply_dense(dense, pooled_UxD, spec, feats))


def item_embeddings(spec: StepSpec, state: TrainState, data: Optional[DeviceData] = None):
  """[N, D] item embeddings as the model scores them (with item features: id rows plus
  their offsets, which need `data`)."""
  if spec.model.item_features:
    if data is None:
      raise ValueError("item_embeddings: the model reads item features; pass the DeviceData")
    return _item_embeddings(spec.model, state.tables["item"], state.dense, data)
  return _maybe_normalize(spec.model, state.tables["item"])


@functools.partial(jax.jit, static_argnums=0)
def _item_embeddings(spec: ModelSpec, table_NxD, dense, data: DeviceData):
  return _items(spec, dense, table_NxD, data)

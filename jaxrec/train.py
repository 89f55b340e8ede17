"""Training loop: TrainState, the jitted train step, evaluation and `train_and_evaluate`.

One step: draw a batch on device -> build the query (MF user row or DNN over a bag of the
user's other items) -> draw negatives -> loss (+ gravity, L2) -> gradients w.r.t. the
*gathered rows* only -> row-wise optimizer on the touched rows of each table (in place,
donated) and optax on the dense tower. Full softmax and gravity touch every item row, so
they differentiate the whole item table instead (the dense path).

Everything is a pure function of (config, seed): per-step randomness is
`fold_in(key, step)`, so a run resumed from a checkpoint replays the same batches.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import platform as _platform
import subprocess
import time
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from jaxrec import losses, metrics, models, samplers, sharding, tables

MODELS = ("mf", "dnn", "wals")
LOSSES = ("full", "sampled", "positive_only")
SHARED_SAMPLERS = ("uniform", "unigram", "log_uniform", "in_batch", "mixed")
PER_EXAMPLE_SAMPLERS = ("hard_exact", "hard_pool", "hard_topk")
SAMPLERS = SHARED_SAMPLERS + PER_EXAMPLE_SAMPLERS
OPTIMIZERS = ("sgd", "adagrad", "adam")
DATASETS = ("synthetic", "movielens", "lastfm", "csv")
SPLITS = ("random", "last", "users")
BATCHING = ("random", "epoch")
POSITIVE_ONLY_KINDS = ("squared", "logistic")


class ConfigError(ValueError):
  """A config value that cannot work; raised before any data is loaded or compiled."""


# --------------------------------------------------------------------------------------
# Config validation (one clear line per problem, before any compute).


def _choice(value, valid, key):
  if value not in valid:
    raise ConfigError(f"{key}={value!r} is not one of {', '.join(valid)}")


def _positive(value, key, *, allow_zero=False):
  if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value):
    raise ConfigError(f"{key}={value!r} must be a number")
  if value < 0 or (value == 0 and not allow_zero):
    raise ConfigError(f"{key}={value!r} must be {'>= 0' if allow_zero else '> 0'}")


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Checks names and sizes; raises ConfigError naming the key. Sizes known only after
  loading data (e.g. K >= N without replacement) are checked by `check_data_fit`."""
  d, m, lo, s, t, e = (config.data, config.model, config.loss, config.sampler,
                       config.train, config.eval)
  _choice(d.name, DATASETS, "data.name")
  _choice(m.name, MODELS, "model.name")
  _choice(lo.name, LOSSES, "loss.name")
  _choice(s.name, SAMPLERS, "sampler.name")
  _choice(t.optimizer, OPTIMIZERS, "train.optimizer")
  _choice(d.split, SPLITS, "data.split")
  _choice(t.batching, BATCHING, "train.batching")
  _choice(lo.positive_only_kind, POSITIVE_ONLY_KINDS, "loss.positive_only_kind")
  if d.name != "synthetic":
    if not d.path:
      raise ConfigError(f"data.path is required for data.name={d.name}")
    if not os.path.exists(d.path):
      raise ConfigError(f"data.path={d.path!r} does not exist")
    if not os.access(d.path, os.R_OK):
      raise ConfigError(f"data.path={d.path!r} is not readable")
  else:
    for k in ("num_groups", "num_users", "num_items", "interactions_per_user"):
      _positive(d[k], f"data.{k}")
    if not 0.0 <= d.noise <= 1.0:
      raise ConfigError(f"data.noise={d.noise!r} must be in [0, 1]")
  if not 0.0 < d.test_fraction < 1.0:
    raise ConfigError(f"data.test_fraction={d.test_fraction!r} must be in (0, 1)")
  _positive(d.language_split, "data.language_split", allow_zero=True)
  _positive(m.dim, "model.dim")
  _positive(lo.temperature, "loss.temperature")
  _positive(lo.gravity, "loss.gravity", allow_zero=True)
  _positive(lo.l2, "loss.l2", allow_zero=True)
  _positive(s.temperature, "sampler.temperature")
  _positive(t.steps, "train.steps")
  _positive(t.batch_size, "train.batch_size")
  _positive(t.learning_rate, "train.learning_rate")
  _positive(t.log_every, "train.log_every")
  _positive(t.checkpoint_every, "train.checkpoint_every", allow_zero=True)
  _positive(e.every, "eval.every", allow_zero=True)
  if not e.ks or any((not isinstance(k, int)) or k <= 0 for k in e.ks):
    raise ConfigError(f"eval.ks={e.ks!r} must be positive integers")
  if m.name == "dnn":
    if any(h <= 0 for h in m.hidden):
      raise ConfigError(f"model.hidden={m.hidden!r} must be positive sizes")
    _positive(m.max_bag, "model.max_bag")
  if m.name == "wals":
    _positive(m.iterations, "model.iterations")
    _positive(m.unobserved_weight, "model.unobserved_weight", allow_zero=True)
    _positive(m.regularization, "model.regularization", allow_zero=True)
  if lo.name == "sampled":
    _positive(s.num_negatives, "sampler.num_negatives")
    _positive(s.batch_negatives, "sampler.batch_negatives", allow_zero=True)
    if s.batch_negatives > t.batch_size:
      raise ConfigError(f"sampler.batch_negatives={s.batch_negatives} exceeds "
                        f"train.batch_size={t.batch_size} (in-batch negatives come from the "
                        "batch)")
    if not (isinstance(s.hard_fraction, (int, float)) and 0.0 <= s.hard_fraction <= 1.0):
      raise ConfigError(f"sampler.hard_fraction={s.hard_fraction!r} must be in [0, 1]")
    if s.hard_fraction != 1.0 and s.name not in PER_EXAMPLE_SAMPLERS:
      raise ConfigError(f"sampler.hard_fraction={s.hard_fraction} applies to the hard "
                        f"samplers {PER_EXAMPLE_SAMPLERS}, not sampler.name={s.name}")
    if s.batch_negatives and s.name not in ("in_batch", "mixed"):
      raise ConfigError(f"sampler.batch_negatives={s.batch_negatives} applies to in_batch "
                        f"and mixed, not sampler.name={s.name}")
    if s.name in ("hard_pool", "hard_topk"):
      _positive(s.pool_size, "sampler.pool_size")
      if s.num_negatives > s.pool_size:
        raise ConfigError(f"sampler.num_negatives={s.num_negatives} must be <= "
                          f"sampler.pool_size={s.pool_size} for {s.name}")


def check_data_fit(config, num_users: int, num_items: int) -> None:
  """Checks that need the data's size."""
  s = config.sampler
  if config.loss.name == "sampled" and config.model.name != "wals":
    if s.name == "uniform" and not s.replace and s.num_negatives >= num_items:
      raise ConfigError(f"sampler.num_negatives={s.num_negatives} must be < the number of "
                        f"items ({num_items}) when sampling without replacement")
    if s.name in ("hard_pool", "hard_topk") and s.pool_size > num_items:
      raise ConfigError(f"sampler.pool_size={s.pool_size} exceeds the number of items "
                        f"({num_items})")
  if max(config.eval.ks) > num_items:
    raise ConfigError(f"eval.ks={tuple(config.eval.ks)} exceeds the number of items ({num_items})")


# --------------------------------------------------------------------------------------
# Data.


def load_data(data_cfg, seed: int):
  """(config.data, seed) -> (train, test) Interactions in one id space."""
  from jaxrec import data as jdata  # local: keeps `import jaxrec.train` light

  if data_cfg.name == "synthetic":
    inter = jdata.make_folding_world(
        num_groups=data_cfg.num_groups, num_users=data_cfg.num_users,
        num_items=data_cfg.num_items, interactions_per_user=data_cfg.interactions_per_user,
        zipf_exponent=data_cfg.zipf_exponent, noise=data_cfg.noise, seed=seed)
  elif data_cfg.name == "movielens":
    inter = jdata.load_movielens(data_cfg.path, min_rating=data_cfg.min_rating or None)
  elif data_cfg.name == "lastfm":
    inter = jdata.load_lastfm(data_cfg.path)
  else:
    inter = jdata.load_csv(data_cfg.path)
  if data_cfg.k_core:
    inter = jdata.k_core(inter, min_user=data_cfg.k_core, min_item=data_cfg.k_core)
  if data_cfg.language_split and data_cfg.language_split > 1:
    inter = jdata.language_split(inter, data_cfg.language_split, seed=seed)
  return jdata.split(inter, kind=data_cfg.split, test_fraction=data_cfg.test_fraction,
                     seed=seed)


class DeviceData(NamedTuple):
  """Device-resident training data; batches are drawn from it inside the jitted step."""
  e_users: jax.Array     # [E] int32, interactions sorted by user
  e_items: jax.Array     # [E] int32
  offsets: jax.Array     # [U+1] int32, user u's interactions are e[offsets[u]:offsets[u+1]]
  item_counts: jax.Array  # [N] float32 train counts
  pop_order: jax.Array    # [N] int32 item ids by decreasing train count (log_uniform ranks)
  unigram: Any            # samplers.UnigramTable built once (unigram sampler), or None


def device_data(train, unigram_alpha: float | None = None) -> DeviceData:
  order = np.lexsort((train.item_ids, train.user_ids))
  users = train.user_ids[order].astype(np.int32)
  items = train.item_ids[order].astype(np.int32)
  offsets = np.zeros(train.num_users + 1, np.int64)
  np.cumsum(np.bincount(users, minlength=train.num_users), out=offsets[1:])
  counts = np.bincount(items, minlength=train.num_items).astype(np.float32)
  pop_order = np.argsort(-counts, kind="stable").astype(np.int32)
  table = None if unigram_alpha is None else samplers.unigram_table(counts, unigram_alpha)
  return DeviceData(jnp.asarray(users), jnp.asarray(items),
                    jnp.asarray(offsets.astype(np.int32)), jnp.asarray(counts),
                    jnp.asarray(pop_order), table)


# --------------------------------------------------------------------------------------
# The step.


@dataclasses.dataclass(frozen=True)
class StepSpec:
  """The static (hashable) settings that shape the compiled step. Runs with equal specs
  and shapes share one compilation (a sweep over seeds compiles once)."""
  model: str
  normalize: bool
  hidden: tuple[int, ...]
  max_bag: int
  loss: str
  temperature: float
  gravity: float
  l2: float
  positive_only_kind: str
  chunk_size: int | None
  sampler: str
  num_negatives: int
  logq: bool
  replace: bool
  unigram_alpha: float
  pool_size: int
  hard_temperature: float
  freq_alpha: float
  num_uniform: int
  batch_negatives: int
  hard_fraction: float
  batch_size: int
  batching: str
  optimizer: str
  learning_rate: float
  skip_nonfinite: bool

  @classmethod
  def from_config(cls, config) -> "StepSpec":
    m, lo, s, t = config.model, config.loss, config.sampler, config.train
    return cls(
        model=m.name, normalize=bool(m.normalize),
        hidden=tuple(int(h) for h in m.hidden), max_bag=int(m.max_bag),
        loss=lo.name, temperature=float(lo.temperature), gravity=float(lo.gravity),
        l2=float(lo.l2), positive_only_kind=lo.positive_only_kind,
        chunk_size=int(lo.chunk_size) or None, sampler=s.name,
        num_negatives=int(s.num_negatives), logq=bool(s.logq), replace=bool(s.replace),
        unigram_alpha=float(s.alpha), pool_size=int(s.pool_size),
        hard_temperature=float(s.temperature), freq_alpha=float(s.freq_alpha),
        num_uniform=int(s.num_uniform) or int(t.batch_size),
        batch_negatives=int(s.batch_negatives) or int(t.batch_size),
        hard_fraction=float(s.hard_fraction), batch_size=int(t.batch_size),
        batching=t.batching, optimizer=t.optimizer, learning_rate=float(t.learning_rate),
        skip_nonfinite=bool(t.skip_nonfinite))

  @property
  def uses_freq(self) -> bool:
    return self.loss == "sampled" and self.sampler in ("in_batch", "mixed")

  @property
  def use_logq(self) -> bool:
    """log-Q correction of the negatives' logits: Z ~ e^{s_pos} + sum_j e^{s_j - log(K q_j)}
    (Bengio & Senecal 2008; Jean et al. 2015). The positive is not corrected, so with every
    item drawn once under uniform q this is exactly the full softmax. hard_topk has no
    proper q (deterministic mining), so it is never corrected."""
    return self.logq and self.sampler != "hard_topk"

  @property
  def dense_items(self) -> bool:
    """Full softmax and gravity read every item row: differentiate the whole table."""
    return self.loss == "full" or self.gravity > 0


class TrainState(NamedTuple):
  step: jax.Array            # int32 scalar
  key: jax.Array             # PRNG key data (uint32[2]); per step: fold_in(key, step)
  tables: dict               # name -> [rows, D]; "query" (users for MF, input items for DNN), "item"
  table_opt: dict            # name -> row-optimizer state
  dense: Any                 # DNN tower params ({} for MF)
  dense_opt: Any             # optax state
  freq: Any                  # samplers.FreqState for in_batch / mixed, else ()
  first_bad_step: jax.Array  # int32, -1 while every loss so far was finite


def _tower(spec: StepSpec, dim: int) -> models.DNNQueryTower:
  return models.DNNQueryTower(hidden=spec.hidden, dim=dim)


def _optimizers(spec: StepSpec):
  row_opt = tables.get_row_optimizer(spec.optimizer, spec.learning_rate)
  dense_opt = {"sgd": optax.sgd, "adagrad": optax.adagrad,
               "adam": optax.adam}[spec.optimizer](spec.learning_rate)
  return row_opt, dense_opt


def init_state(spec: StepSpec, config, num_users: int, num_items: int, seed: int,
               freq_buckets: Optional[int] = None) -> TrainState:
  """freq_buckets (in_batch / mixed frequency estimator): default sampler.freq_buckets, and
  2 x num_items where that is 0."""
  if freq_buckets is None:
    freq_buckets = int(config.sampler.freq_buckets) or 2 * num_items
  dim = int(config.model.dim)
  key = jax.random.PRNGKey(seed)
  k_query, k_item, k_dense, k_train = jax.random.split(key, 4)
  scale = float(config.model.init_scale)
  num_query_rows = num_users if spec.model == "mf" else num_items
  tabs = {"query": models.init_table(k_query, num_query_rows, dim, scale),
          "item": models.init_table(k_item, num_items, dim, scale)}
  row_opt, dense_opt = _optimizers(spec)
  if spec.model == "dnn":
    dense = _tower(spec, dim).init(k_dense, jnp.zeros((1, dim), jnp.float32))
  else:
    dense = {}
  freq = samplers.freq_init(freq_buckets) if spec.uses_freq else ()
  return TrainState(step=jnp.zeros((), jnp.int32), key=k_train, tables=tabs,
                    table_opt={k: row_opt.init(v) for k, v in tabs.items()},
                    dense=dense, dense_opt=dense_opt.init(dense), freq=freq,
                    first_bad_step=jnp.full((), -1, jnp.int32))


def _sample_batch(spec: StepSpec, data: DeviceData, key, step):
  """Training pairs: e indexes interactions (sorted by user)."""
  num_e = data.e_items.shape[0]
  if spec.batching == "random":
    e = jax.random.randint(key, (spec.batch_size,), 0, num_e)
  else:  # epoch permutation, dropping the last partial batch of each epoch
    steps_per_epoch = max(num_e // spec.batch_size, 1)
    epoch, within = step // steps_per_epoch, step % steps_per_epoch
    perm = jax.random.permutation(jax.random.fold_in(key, epoch), num_e)
    e = jax.lax.dynamic_slice(perm, (within * spec.batch_size,), (spec.batch_size,))
    e = e % num_e
  return e, data.e_users[e], data.e_items[e]


def _sample_bag(spec: StepSpec, data: DeviceData, key, e, users):
  """Up to `max_bag` of the user's *other* training items (the target is left out).

  A user with n items has n - 1 candidates: all of them when n - 1 <= L, otherwise L
  uniform draws with replacement (an unbiased estimate of the mean of the full bag)."""
  L = spec.max_bag
  start = data.offsets[users]
  n_other = data.offsets[users + 1] - start - 1                      # [B]
  target_pos = e - start                                             # [B]
  slots = jnp.arange(L)[None, :]
  u = jax.random.uniform(key, (users.shape[0], L))
  drawn = jnp.floor(u * jnp.maximum(n_other, 1)[:, None]).astype(jnp.int32)
  small = (n_other <= L)[:, None]
  pos = jnp.where(small, slots, drawn)
  mask = jnp.where(small, slots < n_other[:, None], n_other[:, None] > 0)
  pos = jnp.where(pos >= target_pos[:, None], pos + 1, pos)          # skip the target
  idx = jnp.clip(start[:, None] + pos, 0, data.e_items.shape[0] - 1)
  return data.e_items[idx], mask


def _negatives(spec: StepSpec, key, data: DeviceData, freq, pos_ids, query_sg, items,
               num_items) -> samplers.Negatives:
  K = spec.num_negatives
  name = spec.sampler
  if name == "uniform":
    return samplers.uniform(key, num_items, K, replace=spec.replace)
  if name == "unigram":
    return samplers.unigram_sample(key, data.unigram, K)
  if name == "log_uniform":  # Zipf over popularity ranks, mapped back to item ids
    neg = samplers.log_uniform(key, num_items, K)
    return neg._replace(ids=data.pop_order[neg.ids])
  if name == "in_batch":
    return samplers.in_batch(pos_ids, freq, spec.batch_negatives)
  if name == "mixed":
    return samplers.mixed(key, pos_ids, freq, num_items, spec.num_uniform,
                          spec.batch_negatives)
  # Hard samplers: round(hard_fraction * K) hard negatives per row, the rest uniform.
  k_hard = int(round(spec.hard_fraction * K))
  if k_hard == 0:
    return samplers.uniform(key, num_items, K)
  # (all hard: the step's key as it is, so f = 1 reproduces the plain hard sampler)
  k_hard_key, k_uni_key = jax.random.split(key) if k_hard < K else (key, None)
  if name == "hard_exact":
    hard = sharding.sharded_hard_exact(k_hard_key, query_sg, items, k_hard,
                                       temperature=spec.hard_temperature,
                                       chunk_size=spec.chunk_size)
  elif name == "hard_pool":
    hard = samplers.hard_pool(k_hard_key, query_sg, items, k_hard, pool_size=spec.pool_size,
                              temperature=spec.hard_temperature)
  else:
    hard = samplers.hard_topk(k_hard_key, query_sg, items, k_hard, pool_size=spec.pool_size,
                              pos_ids=pos_ids)
  if k_hard == K:
    return hard
  return samplers.with_uniform(k_uni_key, hard, num_items, K - k_hard)


def _l2_normalize(x):
  return x * jax.lax.rsqrt(jnp.sum(x * x, axis=-1, keepdims=True) + 1e-12)


def _maybe_normalize(spec: StepSpec, x):
  return _l2_normalize(x) if spec.normalize else x


def _query(spec: StepSpec, dense, query_rows, bag_mask):
  if spec.model == "mf":
    q = query_rows
  else:
    pooled = models.pool_rows(query_rows, bag_mask)
    q = _tower(spec, query_rows.shape[-1]).apply(dense, pooled)
  return _maybe_normalize(spec, q)


def train_step(spec: StepSpec, state: TrainState, data: DeviceData):
  """One optimisation step; returns (new_state, loss). Jitted by `jitted_train_step`."""
  num_items = state.tables["item"].shape[0]
  num_query_rows = state.tables["query"].shape[0]
  key = jax.random.fold_in(state.key, state.step)
  k_batch, k_bag, k_neg = jax.random.split(key, 3)
  e, users, pos_ids = _sample_batch(spec, data, k_batch, state.step)
  B = spec.batch_size

  if spec.model == "mf":
    query_ids, bag_mask = users, None
  else:
    query_ids, bag_mask = _sample_bag(spec, data, k_bag, e, users)
  # Each device gathers the batch's rows it holds; a reduce-scatter leaves each device its
  # part of the batch, so the tower and the loss run batch-parallel.
  query_rows = sharding.gather_rows(state.tables["query"], query_ids, split_batch=True)

  freq = state.freq
  if spec.uses_freq:
    freq = samplers.freq_update(freq, pos_ids, state.step, alpha=spec.freq_alpha)

  neg = None
  if spec.loss == "sampled":
    query_sg = jax.lax.stop_gradient(_query(spec, state.dense, query_rows, bag_mask))
    items_sg = (_maybe_normalize(spec, state.tables["item"])
                if spec.sampler in PER_EXAMPLE_SAMPLERS else None)
    neg = _negatives(spec, k_neg, data, freq, pos_ids, query_sg, items_sg, num_items)
    neg = neg._replace(ids=jax.lax.stop_gradient(neg.ids),
                       log_q=jax.lax.stop_gradient(neg.log_q))

  if spec.dense_items:
    item_ids = jnp.arange(num_items, dtype=jnp.int32)
    item_in = state.tables["item"]
  else:
    item_ids = pos_ids if neg is None else jnp.concatenate([pos_ids, neg.ids.reshape(-1)])
    item_in = sharding.gather_rows(state.tables["item"], item_ids)

  def loss_fn(dense, query_rows, item_in):
    query = _query(spec, dense, query_rows, bag_mask)
    item_in = _maybe_normalize(spec, item_in)
    if spec.dense_items:
      pos_rows = sharding.gather_rows(item_in, pos_ids)
      neg_rows = None if neg is None else sharding.gather_rows(item_in, neg.ids)
    else:
      pos_rows = item_in[:B]
      neg_rows = None if neg is None else item_in[B:].reshape(neg.ids.shape + (-1,))
    if spec.loss == "full":
      per_ex = sharding.sharded_full_softmax(query, item_in, pos_ids,
                                             temperature=spec.temperature,
                                             chunk_size=spec.chunk_size)
    elif spec.loss == "positive_only":
      per_ex = losses.positive_only(query, pos_rows, kind=spec.positive_only_kind)
    else:
      per_ex = losses.sampled_softmax(
          query, pos_rows, neg_rows, pos_ids=pos_ids, neg_ids=neg.ids,
          neg_log_q=neg.log_q if spec.use_logq else None, temperature=spec.temperature)
    loss = jnp.mean(per_ex)
    total = loss
    if spec.gravity > 0:
      total = total + spec.gravity * losses.gravity(query, item_in)
    if spec.l2 > 0:
      total = total + spec.l2 * (jnp.mean(jnp.sum(query ** 2, -1)) +
                                 jnp.mean(jnp.sum(pos_rows ** 2, -1)))
    return total, loss

  (_, loss), (g_dense, g_query, g_item) = jax.value_and_grad(
      loss_fn, argnums=(0, 1, 2), has_aux=True)(state.dense, query_rows, item_in)

  row_opt, dense_opt = _optimizers(spec)
  D = query_rows.shape[-1]
  q_ids = query_ids.reshape(-1)
  if bag_mask is not None:  # padding slots update nothing: the out-of-range id is dropped
    q_ids = jnp.where(bag_mask.reshape(-1), q_ids, num_query_rows)
  # Each device updates the rows it holds (sharding.update_rows: the table never moves).
  new_q, new_q_opt = sharding.update_rows(row_opt, state.tables["query"],
                                          state.table_opt["query"], q_ids,
                                          g_query.reshape(-1, D), state.step)
  if spec.dense_items:  # every row touched: each device updates its own rows
    new_i, new_i_opt = sharding.update_all_rows(row_opt, state.tables["item"],
                                                state.table_opt["item"], g_item, state.step)
  else:
    new_i, new_i_opt = sharding.update_rows(row_opt, state.tables["item"],
                                            state.table_opt["item"], item_ids,
                                            g_item.reshape(-1, D), state.step)
  if spec.model == "dnn":
    upd, new_dense_opt = dense_opt.update(g_dense, state.dense_opt, state.dense)
    new_dense = optax.apply_updates(state.dense, upd)
  else:
    new_dense, new_dense_opt = state.dense, state.dense_opt

  finite = jnp.isfinite(loss)
  first_bad = jnp.where((state.first_bad_step < 0) & ~finite, state.step,
                        state.first_bad_step)
  new_state = TrainState(step=state.step + 1, key=state.key,
                         tables={"query": new_q, "item": new_i},
                         table_opt={"query": new_q_opt, "item": new_i_opt},
                         dense=new_dense, dense_opt=new_dense_opt, freq=freq,
                         first_bad_step=first_bad)
  if spec.skip_nonfinite:
    skipped = state._replace(step=state.step + 1, first_bad_step=first_bad)
    new_state = jax.lax.cond(finite, lambda: new_state, lambda: skipped)
  return new_state, loss


@functools.partial(jax.jit, static_argnums=0, donate_argnums=1)
def jitted_train_step(spec: StepSpec, state: TrainState, data: DeviceData):
  return train_step(spec, state, data)


# --------------------------------------------------------------------------------------
# Evaluation.


def query_embeddings(spec: StepSpec, state: TrainState, data: DeviceData):
  """[U, D] query embeddings: MF user rows, or the DNN over each user's full train bag."""
  if spec.model == "mf":
    return _mf_query_embeddings(spec.normalize, state.tables["query"])
  # Jitted on the fields the tower reads, so the strategies of a sweep (same model, other
  # losses and samplers) share one compilation.
  return _dnn_query_embeddings(spec.hidden, spec.normalize, state.tables["query"],
                               state.dense, data.e_items, data.e_users, data.offsets)


@functools.partial(jax.jit, static_argnums=0)
def _mf_query_embeddings(normalize, table):
  return _l2_normalize(table) if normalize else table


@functools.partial(jax.jit, static_argnums=(0, 1))
def _dnn_query_embeddings(hidden, normalize, table, dense, e_items, e_users, offsets):
  num_users = offsets.shape[0] - 1
  rows = table[e_items]
  summed = jax.ops.segment_sum(rows, e_users, num_segments=num_users)
  counts = (offsets[1:] - offsets[:-1]).astype(jnp.float32)
  pooled = summed / jnp.maximum(counts, 1.0)[:, None]
  q = models.DNNQueryTower(hidden=hidden, dim=rows.shape[-1]).apply(dense, pooled)
  return _l2_normalize(q) if normalize else q


def item_embeddings(spec: StepSpec, state: TrainState):
  """[N, D] item embeddings as the model scores them."""
  return _maybe_normalize(spec, state.tables["item"])


def evaluate_embeddings(query_UxD, items_NxD, train, test, eval_cfg) -> dict[str, float]:
  """Full-ranking metrics of given embeddings (per-shard top-K on several devices)."""
  return metrics.evaluate(query_UxD, items_NxD, train, test, ks=tuple(eval_cfg.ks),
                          chunk_size=int(eval_cfg.chunk_size), topk_fn=sharding.sharded_topk)


def evaluate_model(spec, query_UxD, items_NxD, train, test, eval_cfg) -> dict[str, float]:
  """Full-ranking metrics plus test_softmax_loss: the held-out pairs' cross-entropy under
  the full softmax at the training temperature (what every sampled loss estimates)."""
  out = evaluate_embeddings(query_UxD, items_NxD, train, test, eval_cfg)
  out["test_softmax_loss"] = metrics.heldout_softmax_loss(
      query_UxD, items_NxD, test, temperature=spec.temperature,
      chunk_size=int(eval_cfg.chunk_size))
  return out


def evaluate_state(spec, state, data, train, test, eval_cfg) -> dict[str, float]:
  return evaluate_model(spec, query_embeddings(spec, state, data), item_embeddings(spec, state),
                        train, test, eval_cfg)


# --------------------------------------------------------------------------------------
# Workdir I/O.


def write_json_atomic(path: str, obj) -> None:
  tmp = f"{path}.tmp.{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=2, sort_keys=True, default=_json_default)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def _json_default(x):
  if isinstance(x, (np.integer,)):
    return int(x)
  if isinstance(x, (np.floating,)):
    return float(x)
  if isinstance(x, (np.ndarray, tuple)):
    return list(x)
  raise TypeError(f"not JSON serialisable: {type(x)}")


def config_to_dict(config) -> dict:
  return json.loads(config.to_json_best_effort(sort_keys=True))


def run_facts() -> dict:
  import flax
  import jaxlib
  try:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                            cwd=os.path.dirname(os.path.abspath(__file__)),
                            timeout=5).stdout.strip() or None
  except (OSError, subprocess.SubprocessError):
    commit = None
  return {
      "platform": jax.default_backend(),
      "device_count": jax.device_count(),
      "device_kind": jax.devices()[0].device_kind,
      "host": _platform.node(),
      "git_commit": commit,
      "versions": {"jax": jax.__version__, "jaxlib": jaxlib.__version__,
                   "flax": flax.__version__, "optax": optax.__version__,
                   "numpy": np.__version__, "python": _platform.python_version()},
  }


def _log(fmt, *args):
  """Progress lines go to stdout (library logging stays quiet: orbax logs every file)."""
  print(fmt % args if args else fmt, flush=True)


class NonFiniteLossError(FloatingPointError):
  pass


# --------------------------------------------------------------------------------------
# The whole run.


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, **kwargs) -> dict:
  """`_train_and_evaluate` under `config.mesh` as the ambient mesh (jax.set_mesh), which
  the sharded kernels of jaxrec.sharding read inside jit; one device: no mesh."""
  mesh = sharding.make_mesh(tuple(config.mesh.shape) or None)
  with sharding.mesh_context(mesh):
    return _train_and_evaluate(config, workdir, mesh=mesh, **kwargs)


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *, mesh=None,
                        overwrite: bool = False, data=None, verbose: bool = True) -> dict:
  """Trains and evaluates one config; writes config.json, metrics.jsonl, results.json and
  checkpoints to `workdir`; resumes from the last checkpoint when rerun. Returns results.

  `data` may pass a preloaded (train, test) pair (sweeps reuse it across runs).
  """
  validate_config(config)
  os.makedirs(workdir, exist_ok=True)
  cfg_dict = config_to_dict(config)
  cfg_path = os.path.join(workdir, "config.json")
  if os.path.exists(cfg_path):
    with open(cfg_path) as f:
      old = json.load(f)
    if old != cfg_dict:
      if not overwrite:
        diff = sorted(_flat_diff(old, cfg_dict))
        raise ConfigError(
            f"workdir {workdir} holds a run of a different config (differs in "
            f"{', '.join(diff[:5])}); use another --workdir or pass --overwrite")
      _clear_workdir(workdir)
  write_json_atomic(cfg_path, cfg_dict)

  seed = int(config.seed)
  t_data = time.time()
  train, test = data if data is not None else load_data(config.data, seed)
  check_data_fit(config, train.num_users, train.num_items)
  if verbose:
    _log("data: %d users, %d items, %d train / %d test interactions (%.1fs)",
                 train.num_users, train.num_items, len(train.user_ids), len(test.user_ids),
                 time.time() - t_data)

  if config.model.name == "wals":
    return _wals_run(config, workdir, train, test, verbose)

  spec = StepSpec.from_config(config)
  ddata = device_data(train, spec.unigram_alpha if spec.sampler == "unigram" else None)
  state = init_state(spec, config, train.num_users, train.num_items, seed)

  ckpt = _Checkpointer(workdir, int(config.train.checkpoint_every))
  state, start = ckpt.restore(state)
  if mesh is not None:  # tables row-sharded over the devices, the rest replicated
    state, ddata = sharding.place_state(state, mesh), sharding.place_data(ddata, mesh)
  if start and verbose:
    _log("resumed from the checkpoint at step %d", start)

  steps = int(config.train.steps)
  log_every = int(config.train.log_every)
  eval_every = int(config.eval.every)
  mpath = os.path.join(workdir, "metrics.jsonl")
  if start == 0 and os.path.exists(mpath):
    os.remove(mpath)
  _truncate_metrics(mpath, start)

  train_seconds = 0.0
  t0 = time.time()
  t_log, s_log = t0, start
  loss = None
  throttle = sharding.DispatchThrottle()  # <= 8 steps queued (XLA:CPU multi-device hang)
  for step in range(start, steps):
    state, loss = jitted_train_step(spec, state, ddata)
    throttle(loss)
    done = step + 1
    if done % log_every == 0 or done == steps:
      loss_v = float(loss)  # the only host sync
      bad = int(state.first_bad_step)
      if bad >= 0 and not spec.skip_nonfinite:
        raise NonFiniteLossError(
            f"loss became {'NaN' if math.isnan(loss_v) else 'non-finite'} at step {bad}; "
            f"last good checkpoint: {ckpt.latest_step()} (in {ckpt.directory}); "
            f"set --config.train.skip_nonfinite=True to skip such steps")
      now = time.time()
      sps = (done - s_log) / max(now - t_log, 1e-9)
      train_seconds += now - t_log
      t_log, s_log = now, done
      row = {"step": done, "loss": loss_v, "steps_per_second": sps}
      if bad >= 0:
        row["first_skipped_step"] = bad
      if eval_every and done % eval_every == 0 and done != steps:
        row.update(evaluate_state(spec, state, ddata, train, test, config.eval))
        t_log = time.time()
      _append_jsonl(mpath, row)
      if verbose:
        eta = (steps - done) / max(sps, 1e-9)
        _log("step %d/%d  loss %.4f  %.1f steps/s  ETA %s", done, steps, loss_v, sps,
                     _fmt_seconds(eta))
    ckpt.maybe_save(done, state, final=(done == steps))
  ckpt.close()

  t_eval = time.time()
  query, items = query_embeddings(spec, state, ddata), item_embeddings(spec, state)
  final = evaluate_model(spec, query, items, train, test, config.eval)
  eval_seconds = time.time() - t_eval
  if config.eval.save_embeddings:
    save_embeddings(workdir, query, items, train)
  _append_jsonl(mpath, {"step": steps, **final})
  trained = steps - start
  results = {
      "metrics": final,
      "run": {**run_facts(), "steps": steps, "resumed_from_step": start,
              "steps_per_second": trained / train_seconds if train_seconds > 0 else None,
              "train_seconds": train_seconds, "eval_seconds": eval_seconds,
              "wall_seconds": time.time() - t0,
              "num_users": train.num_users, "num_items": train.num_items},
      "config": cfg_dict,
  }
  write_json_atomic(os.path.join(workdir, "results.json"), results)
  if verbose:
    _log("final: %s", _fmt_metrics(final))
  return results


def save_embeddings(workdir, query_UxD, items_NxD, train) -> None:
  """embeddings.npz: query/item embeddings and group labels (for the PCA picture)."""
  def groups(g, n):
    return np.asarray(g) if g is not None else np.zeros(n, np.int32)
  path = os.path.join(workdir, "embeddings.npz")
  with open(path + ".tmp", "wb") as f:
    np.savez(f, query=np.asarray(query_UxD, np.float32), items=np.asarray(items_NxD, np.float32),
             user_groups=groups(train.user_groups, train.num_users),
             item_groups=groups(train.item_groups, train.num_items))
  os.replace(path + ".tmp", path)


def _wals_run(config, workdir, train, test, verbose) -> dict:
  from jaxrec import wals

  m = config.model
  t0 = time.time()
  state, history = wals.wals_fit(
      train, dim=int(m.dim), unobserved_weight=float(m.unobserved_weight),
      regularization=float(m.regularization), alpha=float(m.alpha),
      iterations=int(m.iterations), seed=int(config.seed), solver=m.solver,
      reg_scaling=m.reg_scaling)
  train_seconds = time.time() - t0
  mpath = os.path.join(workdir, "metrics.jsonl")
  if os.path.exists(mpath):
    os.remove(mpath)
  for i, h in enumerate(history):
    _append_jsonl(mpath, {"step": i + 1, **{k: float(v) for k, v in h.items()}})
  t_eval = time.time()
  if config.eval.save_embeddings:
    save_embeddings(workdir, state.users_UxD, state.items_NxD, train)
  final = evaluate_embeddings(state.users_UxD, state.items_NxD, train, test, config.eval)
  results = {
      "metrics": final,
      "run": {**run_facts(), "steps": int(m.iterations), "resumed_from_step": 0,
              "steps_per_second": int(m.iterations) / train_seconds,
              "train_seconds": train_seconds, "eval_seconds": time.time() - t_eval,
              "wall_seconds": time.time() - t0,
              "num_users": train.num_users, "num_items": train.num_items},
      "config": config_to_dict(config),
  }
  write_json_atomic(os.path.join(workdir, "results.json"), results)
  if verbose:
    _log("final: %s", _fmt_metrics(final))
  return results


class _Checkpointer:
  """Orbax checkpoints under workdir/checkpoints. Orbax writes each step into a temporary
  folder and renames it when complete, so a torn (killed) save is never picked up."""

  def __init__(self, workdir: str, every: int):
    self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    self.every = every
    self._mngr = None
    if every:
      import orbax.checkpoint as ocp
      self._ocp = ocp
      self._mngr = ocp.CheckpointManager(
          self.directory,
          options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True,
                                               enable_async_checkpointing=True))

  def latest_step(self):
    return self._mngr.latest_step() if self._mngr else None

  def restore(self, state):
    if not self._mngr:
      return state, 0
    for step in sorted(self._mngr.all_steps(), reverse=True):
      try:
        abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
        restored = self._mngr.restore(step, args=self._ocp.args.StandardRestore(abstract))
        return type(state)(*restored) if isinstance(restored, (list, tuple)) else restored, step
      except Exception as err:  # a damaged checkpoint: set it aside, try the previous one
        aside = os.path.join(self.directory, f"{step}.unreadable-{int(time.time())}")
        os.replace(os.path.join(self.directory, str(step)), aside)
        self._mngr.reload()
        logging.warning("checkpoint at step %d is unreadable (%s); moved to %s, trying an "
                        "older one", step, err, aside)
    return state, 0

  def maybe_save(self, step, state, final=False):
    if self._mngr and (step % self.every == 0 or final):
      self._mngr.save(step, args=self._ocp.args.StandardSave(state), force=True)

  def close(self):
    if self._mngr:
      self._mngr.wait_until_finished()
      self._mngr.close()


def _append_jsonl(path, row):
  if jax.process_index() != 0:  # several hosts: one writer
    return
  with open(path, "a") as f:
    f.write(json.dumps(row, sort_keys=True, default=_json_default) + "\n")
    f.flush()


def _truncate_metrics(path, step):
  """On resume, drop log lines from steps after the checkpoint (they will be redone)."""
  if not os.path.exists(path):
    return
  with open(path) as f:
    rows = [line for line in f if line.strip()]
  keep = []
  for line in rows:
    try:
      if json.loads(line).get("step", 0) <= step:
        keep.append(line)
    except json.JSONDecodeError:  # a torn last line from a killed run
      pass
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.writelines(keep)
  os.replace(tmp, path)


def _clear_workdir(workdir):
  import shutil
  for name in ("metrics.jsonl", "results.json"):
    p = os.path.join(workdir, name)
    if os.path.exists(p):
      os.remove(p)
  shutil.rmtree(os.path.join(workdir, "checkpoints"), ignore_errors=True)


def _flat_diff(a, b, prefix=""):
  keys = set(a) | set(b) if isinstance(a, dict) and isinstance(b, dict) else set()
  for k in keys:
    p = f"{prefix}{k}"
    if isinstance(a.get(k), dict) and isinstance(b.get(k), dict):
      yield from _flat_diff(a[k], b[k], p + ".")
    elif a.get(k) != b.get(k):
      yield p


def _fmt_seconds(s):
  s = int(s)
  return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def _fmt_metrics(m):
  return "  ".join(f"{k} {v:.4f}" for k, v in sorted(m.items()) if isinstance(v, float))

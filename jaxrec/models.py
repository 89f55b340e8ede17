"""Models: the query towers (Flax Linen) over rows gathered from plain tables, and `REGISTRY`.

Embedding tables are NOT module parameters: they are plain [N,E] arrays in the train
state (see `jaxrec.tables`), so that the train step can gather the rows a batch
touches, differentiate w.r.t. those rows only, and update them sparsely. The towers here
take gathered rows and hold only the small dense parameters (MLP weights), which optax
updates densely. Items are their table rows.

 mf:   query = user_table[user]                                   (no dense parameters)
 dnn:  query = DNNQueryTower(pool_rows(item_table[bag], mask))    (Covington et al. 2016,
       "Deep Neural Networks for YouTube Recommendations"; the bag is the user's other items)
 wals, ease, popularity: closed form, no train step: `fit(config, train) -> scorer`
       (`jaxrec.wals.fit_config`, `jaxrec.baselines`), evaluated by
       `evaluate.evaluate_scorer`.

`REGISTRY` maps config `model.name` to a `Model` record with one calling convention:
`init_dense(key, spec, dim) -> params` and `apply_dense(params, x_BxD, spec, user_feats)
-> query_BxD`, x being the user's row (mf) or the pooled bag (dnn), user_feats the
users' (cat, num) side features or None.

Side features (`spec.user_features` / `spec.item_features`, `jaxrec.data.features`): the
dense parameters become one `FeatureTowers` (feature embedding tables, small and touched
by most steps, so dense params updated by optax; the id tables stay sparse rows). User
features enter the query (the DNN's MLP input; MF adds them to the user row); item
features add `item_offsets` to the item rows.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxrec import baselines, wals

Array = jax.Array


def init_table(key: Array, num_rows: int, dim: int, scale: Optional[float] = None) -> Array:
  """An [num_rows, dim] float32 table with entries ~ Normal(0, scale^2).

  The default scale 1/sqrt(dim) gives rows of expected squared norm 1.
  """
  if num_rows <= 0 or dim <= 0:
    raise ValueError(f"init_table needs num_rows > 0 and dim > 0; got {num_rows}, {dim}")
  if scale is None:
    scale = 1.0 / float(dim) ** 0.5
  return scale * jax.random.normal(key, (num_rows, dim), jnp.float32)


def pool_rows(rows_BxLxE: Array, mask_BxL: Array) -> Array:
  """Masked mean over the bag axis: sum_l mask[b,l] rows[b,l] / max(1, sum_l mask[b,l]).

  An empty bag (all mask zero) gives the zero vector. Differentiable w.r.t. the rows,
  so the train step can gather rows first and take gradients w.r.t. them.
  """
  if rows_BxLxE.ndim != 3 or mask_BxL.shape != rows_BxLxE.shape[:2]:
    raise ValueError(
        f"pool_rows expects rows [B,L,E] and mask [B,L]; got {rows_BxLxE.shape} and "
        f"{mask_BxL.shape}"
    )
  mask_BxL = mask_BxL.astype(rows_BxLxE.dtype)
  total_BxE = jnp.einsum("ble,bl->be", rows_BxLxE, mask_BxL)
  count_Bx1 = jnp.maximum(jnp.sum(mask_BxL, axis=1, keepdims=True), 1.0)
  return total_BxE / count_Bx1


class DNNQueryTower(nn.Module):
  """Softmax-DNN query tower: MLP over [pooled bag embedding, dense side features].

  query = W_out relu(... relu(W_1 [bag; features] + b_1) ...) + b_out,  shape [B, dim].
  """

  hidden: Sequence[int]
  dim: int

  @nn.compact
  def __call__(self, bag_BxE: Array, features_BxF: Optional[Array] = None) -> Array:
    x = bag_BxE
    if features_BxF is not None:
      if features_BxF.ndim != 2 or features_BxF.shape[0] != bag_BxE.shape[0]:
        raise ValueError(
            f"features must be [B,F] with B={bag_BxE.shape[0]}; got " f"{features_BxF.shape}"
        )
      x = jnp.concatenate([x, features_BxF.astype(x.dtype)], axis=-1)
    for i, width in enumerate(self.hidden):
      x = nn.relu(nn.Dense(width, name=f"hidden_{i}")(x))
    return nn.Dense(self.dim, name="out")(x)


# A bag whose table rows x slots is at most this is read as a product with its [R, V]
# weights (one matmul forward and backward), else as a gather and a scatter-add of the
# gradient. On 2 CPU cores (forward + backward, R = 768): one-hot is faster at V = 8, one
# slot (18 vs 32 us), slower at V = 21, 3 slots (97 vs 70 us) and V = 51 (88 vs 20 us).
ONE_HOT_CELLS = 24


def embed_bag(table_VxE: Array, ids_RxL: Array) -> Array:
  """One embedded feature: the mean of rows table[ids[r,l]] over the slots with id > 0,
  or the reserved unknown row table[0] when a row has none (an unknown or missing value,
  an empty bag). A categorical feature is a bag of one slot."""
  mask_RxL = (ids_RxL > 0).astype(table_VxE.dtype)
  count_Rx1 = jnp.sum(mask_RxL, axis=1, keepdims=True)
  if table_VxE.shape[0] * ids_RxL.shape[1] <= ONE_HOT_CELLS:
    # weights[r, v] = (# slots of r holding v) / count_r; an empty bag puts 1 on row 0.
    onehot_RxLxV = jax.nn.one_hot(ids_RxL, table_VxE.shape[0], dtype=table_VxE.dtype)
    weights_RxV = jnp.einsum("rlv,rl->rv", onehot_RxLxV, mask_RxL) / jnp.maximum(count_Rx1, 1.0)
    weights_RxV = weights_RxV.at[:, 0].add((count_Rx1[:, 0] == 0).astype(table_VxE.dtype))
    return weights_RxV @ table_VxE
  # Empty slots read an appended zero row, so the sum needs no [R, L, E] mask.
  padded_WxE = jnp.concatenate([table_VxE, jnp.zeros_like(table_VxE[:1])])
  slots_RxL = jnp.where(ids_RxL > 0, ids_RxL, table_VxE.shape[0])
  summed_RxE = jnp.sum(padded_WxE[slots_RxL], axis=1)
  return jnp.where(count_Rx1 > 0, summed_RxE / jnp.maximum(count_Rx1, 1.0), table_VxE[0])


class FeatureEmbed(nn.Module):
  """One side's side features -> a list of [R, dim] embeddings, one per categorical /
  multi / year feature (`embed_bag` over its own table `embed_NAME` [size, dim], dense
  parameters ~ N(0, 1/dim)), in `decls` order. `cat_RxS` holds the features' id columns
  side by side (`decls[i].slots` each)."""

  decls: tuple  # jaxrec.data.features.FeatureDecl
  dim: int

  @nn.compact
  def __call__(self, cat_RxS: Array) -> list:
    init = nn.initializers.normal(stddev=1.0 / float(self.dim) ** 0.5)
    outs, start = [], 0
    for d in self.decls:
      if not d.slots:
        continue
      table = self.param(f"embed_{d.name}", init, (d.size, self.dim), jnp.float32)
      outs.append(embed_bag(table, cat_RxS[:, start : start + d.slots]))
      start += d.slots
    return outs


def _has_numeric(decls) -> bool:
  return any(not d.slots for d in decls)


class FeatureTowers(nn.Module):
  """The dense parameters of a model with side features (Covington et al. 2016, sec. 3.3:
  embedded categorical features and normalised numeric ones beside the watch history).

  query (dnn) = DNNQueryTower([pool(bag); e_1(u); ...; e_C(u); z(u); missing(u)])
  query (mf)  = user_row + sum_c e_c(u) + W_u [z(u); missing(u)]
  item offset = sum_c e_c(i) + W_i [z(i); missing(i)]    (item embedding = id row + offset)

  e_c: the feature's embedding (`embed_bag`); z, missing: a numeric feature's standardised
  value and missing indicator; W: Dense(dim) without bias (only with numeric features).
  The item offset keeps retrieval a dot product and the id rows sparse."""

  model: str  # "mf" | "dnn"
  hidden: Sequence[int]
  dim: int
  user_decls: tuple = ()
  item_decls: tuple = ()

  def setup(self):
    if self.user_decls:
      self.user_embed = FeatureEmbed(self.user_decls, self.dim)
    if self.item_decls:
      self.item_embed = FeatureEmbed(self.item_decls, self.dim)
    if self.model == "dnn":
      self.tower = DNNQueryTower(hidden=self.hidden, dim=self.dim)
    elif _has_numeric(self.user_decls):
      self.user_numeric = nn.Dense(self.dim, use_bias=False)
    if _has_numeric(self.item_decls):
      self.item_numeric = nn.Dense(self.dim, use_bias=False)

  def query(self, x_BxD: Array, cat_BxS: Optional[Array], num_BxG: Optional[Array]) -> Array:
    embedded = self.user_embed(cat_BxS) if self.user_decls else []
    numeric = [num_BxG] if _has_numeric(self.user_decls) else []
    if self.model == "dnn":
      feats = embedded + numeric
      return self.tower(x_BxD, jnp.concatenate(feats, axis=-1) if feats else None)
    out = x_BxD + sum(embedded, jnp.zeros_like(x_BxD))
    return out + self.user_numeric(num_BxG) if numeric else out

  def item(self, cat_MxS: Array, num_MxG: Array) -> Array:
    rows = cat_MxS.shape[0]
    out = sum(self.item_embed(cat_MxS), jnp.zeros((rows, self.dim), jnp.float32))
    return out + self.item_numeric(num_MxG) if _has_numeric(self.item_decls) else out

  def __call__(self, x_BxD, user_cat, user_num, item_cat, item_num):
    """Touches every parameter (for init)."""
    item = self.item(item_cat, item_num) if self.item_decls else None
    return self.query(x_BxD, user_cat, user_num), item


def has_features(spec) -> bool:
  return bool(spec.user_features or spec.item_features)


def _towers(spec, dim) -> FeatureTowers:
  return FeatureTowers(spec.name, spec.hidden, dim, spec.user_features, spec.item_features)


def _zeros_for(decls):
  slots = sum(d.slots for d in decls)
  numeric = 2 * sum(not d.slots for d in decls)
  return jnp.zeros((1, slots), jnp.int32), jnp.zeros((1, numeric), jnp.float32)


def _init_features(key, spec, dim):
  return _towers(spec, dim).init(
      key,
      jnp.zeros((1, dim), jnp.float32),
      *_zeros_for(spec.user_features),
      *_zeros_for(spec.item_features),
  )


def _no_dense(key, spec, dim):
  if has_features(spec):
    return _init_features(key, spec, dim)
  return {}


def _identity(params, x_BxD, spec, user_feats=None):
  if has_features(spec):
    return _towers(spec, x_BxD.shape[-1]).apply(params, x_BxD, *_split(user_feats), method="query")
  return x_BxD


def _dnn_init(key, spec, dim):
  if has_features(spec):
    return _init_features(key, spec, dim)
  return DNNQueryTower(hidden=spec.hidden, dim=dim).init(key, jnp.zeros((1, dim), jnp.float32))


def _dnn_apply(params, pooled_BxD, spec, user_feats=None):
  if has_features(spec):
    return _identity(params, pooled_BxD, spec, user_feats)
  return DNNQueryTower(hidden=spec.hidden, dim=pooled_BxD.shape[-1]).apply(params, pooled_BxD)


def _split(feats):
  return (None, None) if feats is None else feats


def item_offsets(params, spec, item_cat_MxS: Array, item_num_MxG: Array, dim: int) -> Array:
  """[M, dim]: what the item features add to the item rows (see `FeatureTowers`)."""
  return _towers(spec, dim).apply(params, item_cat_MxS, item_num_MxG, method="item")


@dataclasses.dataclass(frozen=True)
class Model:
  """A registered model. `query_table`: what the query table's rows are ("users": one row
  per user; "items": the query pools a bag of the user's other items over item rows).
  `fit(config, train) -> scorer`: set for closed-form models (no jitted step); the scorer
  has `scores(users_B) -> [B, N]` or `query_UxD`/`items_NxD` embeddings, and may carry a
  `history` (one dict per iteration). `spec` is a `jaxrec.config.ModelSpec`."""

  help: str
  query_table: str = "users"
  fit: Optional[Callable[..., Any]] = None
  seeded: bool = True  # False: the fit does not depend on config.seed (EASE, popularity)
  init_dense: Callable[..., Any] = _no_dense
  apply_dense: Callable[..., Array] = _identity


REGISTRY: dict[str, Model] = {
    "mf": Model("matrix factorization: the query is the user's row"),
    "dnn": Model(
        "softmax DNN: MLP over the mean of the user's other items' rows",
        query_table="items",
        init_dense=_dnn_init,
        apply_dense=_dnn_apply,
    ),
    "wals": Model("weighted ALS / iALS, closed form (jaxrec.wals)", fit=wals.fit_config),
    "ease": Model(
        "EASE (Steck 2019), closed form, ridge model.ease_lambda",
        fit=baselines.fit_ease,
        seeded=False,
    ),
    "popularity": Model(
        "most popular: train count of the item", fit=baselines.fit_popularity, seeded=False
    ),
}


def trained_by_step(name: str) -> bool:
  """The model has a jitted train step (else a closed-form `fit`)."""
  return REGISTRY[name].fit is None


def help_text() -> str:
  """One line per registered model (for the launcher's --help)."""
  return "\n".join(f"{name}: {m.help}" for name, m in REGISTRY.items())

"""Query and item towers (Flax Linen) over embedding rows gathered from plain tables.

Embedding tables are NOT module parameters: they are plain [N,E] arrays in the train
state (see `jaxrec.tables`), so that the train step can gather the rows a batch
touches, differentiate w.r.t. those rows only, and update them sparsely. The modules
here therefore take gathered rows and hold only the small dense parameters (MLP
weights, feature projections), which optax updates densely.

 MF:          query = user_table[user_ids]                     (MFQueryTower: identity)
 softmax-DNN: query = MLP([pool_bag(item_table, bag), feats])  (DNNQueryTower;
       Covington et al. 2016, "Deep Neural Networks for YouTube Recommendations")
 items:       items = item_table[ids] (+ Dense(item_features))  (ItemTower)
"""

from __future__ import annotations

from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

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
      f"{mask_BxL.shape}")
  mask_BxL = mask_BxL.astype(rows_BxLxE.dtype)
  total_BxE = jnp.einsum("ble,bl->be", rows_BxLxE, mask_BxL)
  count_Bx1 = jnp.maximum(jnp.sum(mask_BxL, axis=1, keepdims=True), 1.0)
  return total_BxE / count_Bx1


def pool_bag(table_NxE: Array, bag_ids_BxL: Array, bag_mask_BxL: Array) -> Array:
  """Masked mean of the table rows named by each bag (zeros for an empty bag).

  Masked-out positions may hold any id (padding is clipped into range and weighted 0).
  """
  rows_BxLxE = jnp.take(table_NxE, bag_ids_BxL, axis=0, mode="clip")
  return pool_rows(rows_BxLxE, bag_mask_BxL)


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
          f"features must be [B,F] with B={bag_BxE.shape[0]}; got "
          f"{features_BxF.shape}")
      x = jnp.concatenate([x, features_BxF.astype(x.dtype)], axis=-1)
    for i, width in enumerate(self.hidden):
      x = nn.relu(nn.Dense(width, name=f"hidden_{i}")(x))
    return nn.Dense(self.dim, name="out")(x)


class MFQueryTower(nn.Module):
  """Matrix-factorization query tower: the gathered user row is the query (identity).

  Holds no parameters; it exists so MF and softmax-DNN models share one interface.
  """

  @nn.compact
  def __call__(self, user_rows_BxD: Array) -> Array:
    return user_rows_BxD


class ItemTower(nn.Module):
  """Item tower: items = rows (+ Dense(dim)(item_features) when features are given)."""

  dim: int

  @nn.compact
  def __call__(self, item_rows_NxD: Array,
               item_features_NxF: Optional[Array] = None) -> Array:
    if item_rows_NxD.shape[-1] != self.dim:
      raise ValueError(
        f"ItemTower(dim={self.dim}) got item rows of width {item_rows_NxD.shape[-1]}")
    if item_features_NxF is None:
      return item_rows_NxD
    if item_features_NxF.shape[:-1] != item_rows_NxD.shape[:-1]:
      raise ValueError(
        f"item features {item_features_NxF.shape} do not match item rows "
        f"{item_rows_NxD.shape} in their leading dims")
    features_NxF = item_features_NxF.astype(item_rows_NxD.dtype)
    return item_rows_NxD + nn.Dense(self.dim, name="feature_proj")(features_NxF)

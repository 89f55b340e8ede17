"""Device mesh and shardings: batch over the `data` axis, embedding tables row-sharded.

Uses JAX's own SPMD partitioning (jax.sharding.Mesh / NamedSharding): the train step is
unchanged; placing its inputs with these shardings is what distributes it.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def make_mesh(shape=None) -> Mesh | None:
  """A ('data',) mesh over `shape[0]` devices (default: all). None for a single device."""
  n = jax.device_count() if not shape else int(np.prod(shape))
  if n > jax.device_count():
    raise ValueError(f"mesh.shape={tuple(shape)} needs {n} devices; "
                     f"{jax.device_count()} available")
  if n <= 1:
    return None
  return Mesh(np.array(jax.devices()[:n]), ("data",))


def _rows(mesh: Mesh, x):
  """Row-shard arrays whose leading dim divides evenly over the mesh; replicate others."""
  n = mesh.shape["data"]
  if getattr(x, "ndim", 0) >= 1 and x.shape[0] % n == 0 and x.shape[0] >= n:
    return NamedSharding(mesh, P("data"))
  return NamedSharding(mesh, P())


def place_state(state, mesh: Mesh):
  """Tables and their optimizer states row-sharded; everything else replicated."""
  tables = jax.tree.map(lambda x: jax.device_put(x, _rows(mesh, x)), state.tables)
  table_opt = jax.tree.map(lambda x: jax.device_put(x, _rows(mesh, x)), state.table_opt)
  rep = NamedSharding(mesh, P())
  rest = {k: jax.tree.map(lambda x: jax.device_put(x, rep), getattr(state, k))
          for k in ("step", "key", "dense", "dense_opt", "freq", "first_bad_step")}
  return state._replace(tables=tables, table_opt=table_opt, **rest)


def place_data(data, mesh: Mesh):
  """Training arrays replicated (every device draws its part of the batch from them)."""
  rep = NamedSharding(mesh, P())
  return jax.tree.map(lambda x: jax.device_put(x, rep), data)

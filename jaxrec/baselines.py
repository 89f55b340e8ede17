"""Closed-form baselines (most-popular, EASE) as scoring functions for `metrics.evaluate_scores`.

Each fit returns a small frozen record whose ``scores(users_B) -> scores_BxN`` (numpy
float32) ranks the whole catalogue for a batch of users, so a baseline is evaluated with
the same users, masking and metrics as any model:

  model = baselines.ease(train, lam=80.0)
  metrics.evaluate_scores(model.scores, train.num_users, train.num_items, train, test)

Both fit on the binary user-item matrix X (X_ui = 1 iff (u, i) is a train pair; repeated
pairs and weights are ignored), host-side in numpy.
"""

from __future__ import annotations

import dataclasses

import numpy as np

# scipy is a hard dependency of jax and jaxlib, so this import is always available; its
# LAPACK wrappers give the in-place Cholesky inverse (potrf + potri) that lets an
# [N, N] float32 matrix be inverted without a second [N, N] copy.
from scipy.linalg import lapack

# Scoring reads at most this many bytes of gathered B rows at once.
_GATHER_BYTES = 256 << 20
# The Gram build handles at most this many (item, item) increments per chunk of users.
_PAIR_BUDGET = 1 << 24
# Largest matrix inverted by one LAPACK call (`inverse_spd_inplace`).
_LAPACK_MAX_N = 24576
# Rows per block when symmetrising / scaling an [N, N] matrix in place.
_ROW_BLOCK = 2048


def _binary_csr(train) -> tuple[np.ndarray, np.ndarray, int, int]:
  """(offsets [U + 1] int64, items [nnz] int64 sorted per user, U, N) of binary X."""
  num_users, num_items = int(train.num_users), int(train.num_items)
  keys = np.unique(
      np.asarray(train.user_ids, np.int64) * num_items + np.asarray(train.item_ids, np.int64)
  )
  users, items = keys // num_items, keys % num_items
  offsets = np.zeros(num_users + 1, np.int64)
  np.cumsum(np.bincount(users, minlength=num_users), out=offsets[1:])
  return offsets, items, num_users, num_items


# ----------------------------------------------------------------------------------------
# Most popular.


@dataclasses.dataclass(frozen=True, eq=False)
class Popularity:
  """score_uj = count_j, the number of train users of item j, for every user u."""

  counts_N: np.ndarray

  num_users: int = 0

  def scores(self, users_B) -> np.ndarray:
    """[B, N] float32: the same popularity row for every user."""
    return np.broadcast_to(self.counts_N, (len(users_B), self.counts_N.size))

  @property
  def query_UxD(self) -> np.ndarray:
    """Embeddings of dim 1 (ones; counts), so popularity goes through the embedding
    evaluation and gets the folding metrics where there are groups."""
    return np.ones((self.num_users, 1), np.float32)

  @property
  def items_NxD(self) -> np.ndarray:
    return self.counts_N[:, None]


def popularity(train) -> Popularity:
  """Most-popular baseline: ranks unseen items by their number of train users."""
  offsets, items, _, num_items = _binary_csr(train)
  del offsets
  return Popularity(
      np.bincount(items, minlength=num_items).astype(np.float32), int(train.num_users)
  )


# ----------------------------------------------------------------------------------------
# EASE.


def gram(train, *, pair_budget: int = _PAIR_BUDGET) -> np.ndarray:
  """G = X^T X as a dense [N, N] float32 array (G_ij = number of users with i and j).

  Built from the sparse rows: for a chunk of users holding at most ``pair_budget``
  (item, item) pairs (one user may exceed it alone), the keys i * N + j of every pair
  within a user are added with `np.add.at`; so the only large array is G itself. Counts
  are exact in float32 up to 2**24 users per pair.
  """
  offsets, items, num_users, num_items = _binary_csr(train)
  g = np.zeros((num_items, num_items), np.float32)
  flat = g.reshape(-1)
  n = np.diff(offsets)
  pairs = n * n
  lo = 0
  while lo < num_users:
    cum = np.cumsum(pairs[lo:])
    hi = lo + max(1, int(np.searchsorted(cum, pair_budget, side="right")))
    e_lo, e_hi = offsets[lo], offsets[hi]
    if e_hi > e_lo:
      n_e = np.repeat(n[lo:hi], n[lo:hi])  # each entry's user's count
      start_e = np.repeat(offsets[lo:hi], n[lo:hi])  # each entry's user's first entry
      left = np.repeat(np.arange(e_lo, e_hi), n_e)
      first = np.cumsum(n_e) - n_e  # where each entry's run starts
      right = np.repeat(start_e - first, n_e) + np.arange(left.size)
      np.add.at(flat, items[left] * num_items + items[right], np.float32(1))
    lo = hi
  return g


def _symmetrise_lower(a: np.ndarray) -> None:
  """Copies the lower triangle of a C-order [N, N] array onto its upper one, in place."""
  n = a.shape[0]
  for r0 in range(0, n, _ROW_BLOCK):
    r1 = min(r0 + _ROW_BLOCK, n)
    a[:r0, r0:r1] = a[r0:r1, :r0].T
    block = a[r0:r1, r0:r1]
    upper = np.triu_indices(r1 - r0, 1)
    block[upper] = block.T[upper]


def _lapack_inverse_inplace(a: np.ndarray) -> np.ndarray:
  """a^-1 of a C-order SPD float32 array in a's own memory (LAPACK spotrf + spotri)."""
  # A symmetric C-order array read as Fortran order (a.T) is the same matrix, so LAPACK
  # works in place; its "upper" triangle is the lower triangle of `a` in C order.
  c, info = lapack.spotrf(a.T, lower=0, clean=0, overwrite_a=1)
  if info != 0:
    raise np.linalg.LinAlgError(
        f"EASE: Cholesky failed (info={info}); X^T X + lam I is not "
        "positive definite in float32: increase lam"
    )
  inv, info = lapack.spotri(c, lower=0, overwrite_c=1)
  if info != 0:
    raise np.linalg.LinAlgError(f"EASE: Cholesky inverse failed (info={info})")
  p = inv.T  # C order when done in place
  _symmetrise_lower(p)
  return p


def inverse_spd_inplace(a: np.ndarray) -> np.ndarray:
  """a^-1 for a symmetric positive definite C-order float32 [N, N] array; a is
  overwritten and holds the full symmetric inverse, which is returned.

  Up to `_LAPACK_MAX_N` rows: a float32 Cholesky factorisation and inverse in place
  (`_lapack_inverse_inplace`). Above it, by blocks (Schur complement), since scipy's
  OpenBLAS 0.3.31 spotrf segfaulted on 2 threads for N >= 32,700:
    a = [[A, B^T], [B, C]],  W = B A^-1,  S = C - W B^T,
    a^-1 = [[A^-1 + W^T S^-1 W, -(S^-1 W)^T], [-S^-1 W, S^-1]],
  with A^-1 and S^-1 by recursion; about 1.25 N^3 flops and 0.75 N^2 floats of scratch.
  """
  n = a.shape[0]
  if n <= _LAPACK_MAX_N:
    return _lapack_inverse_inplace(a)
  m = n // 2
  a_inv = inverse_spd_inplace(np.ascontiguousarray(a[:m, :m]))
  w = a[m:, :m] @ a_inv  # W = B A^-1
  s = w @ a[:m, m:]
  np.subtract(a[m:, m:], s, out=s)  # S = C - W B^T
  a[m:, m:] = inverse_spd_inplace(s)
  del s
  np.matmul(a[m:, m:], w, out=a[m:, :m])
  a[m:, :m] *= -1.0  # -S^-1 W
  w_t_s_w = w.T @ a[m:, :m]  # -W^T S^-1 W
  np.subtract(a_inv, w_t_s_w, out=a[:m, :m])
  del w_t_s_w, a_inv, w
  a[:m, m:] = a[m:, :m].T
  return a


def item_components(offsets, items, num_users: int, num_items: int) -> np.ndarray:
  """int [N]: the connected component of each item in the user-item graph (items i and j
  are connected when some user has both; an item without users is its own component).
  X^T X is block-diagonal over these components, and so is (X^T X + lam I)^-1."""
  from scipy.sparse import coo_matrix
  from scipy.sparse.csgraph import connected_components

  users = np.repeat(np.arange(num_users), np.diff(offsets))
  n = num_users + num_items  # bipartite graph: users 0..U-1, items U..U+N-1
  graph = coo_matrix((np.ones(items.size, np.int8), (users, num_users + items)), shape=(n, n))
  _, labels = connected_components(graph, directed=False)
  return labels[num_users:]


def _inverse_by_components(a: np.ndarray, labels_N: np.ndarray) -> np.ndarray:
  """a^-1 of a symmetric positive definite a that is block-diagonal over labels_N (zero
  between components), in a's memory. Components of at most half the rows are inverted
  one by one (sum_c N_c^3 flops instead of N^3: 16x less for 4 equal blocks, as in the
  language-split data); with a larger component, `inverse_spd_inplace` of the whole."""
  _, inverse, sizes = np.unique(labels_N, return_inverse=True, return_counts=True)
  n = a.shape[0]
  if sizes.max() > n // 2:
    return inverse_spd_inplace(a)
  order = np.argsort(inverse, kind="stable")
  bounds = np.concatenate([[0], np.cumsum(sizes)])
  blocks = []
  for c in range(sizes.size):
    idx = order[bounds[c] : bounds[c + 1]]
    blocks.append((idx, inverse_spd_inplace(np.ascontiguousarray(a[np.ix_(idx, idx)]))))
  for r0 in range(0, n, _ROW_BLOCK):
    a[r0 : r0 + _ROW_BLOCK] = 0.0
  for idx, block in blocks:
    a[np.ix_(idx, idx)] = block
  return a


@dataclasses.dataclass(frozen=True, eq=False)
class Ease:
  """EASE scores s_u = x_u B (x_u the user's binary train row), B [N, N] float32."""

  b_NxN: np.ndarray
  offsets: np.ndarray  # binary X in CSR form (`_binary_csr`)
  items: np.ndarray

  def scores(self, users_B) -> np.ndarray:
    """[B, N] float32: sum of the rows of B at each user's train items (0 for none).

    Rows are gathered in sub-batches of at most ~256 MiB, so no [users, N] matrix other
    than the output exists and X is never made dense.
    """
    users = np.asarray(users_B, np.int64)
    num_items = self.b_NxN.shape[0]
    out = np.zeros((users.size, num_items), np.float32)
    starts, ends = self.offsets[users], self.offsets[users + 1]
    max_rows = max(1, _GATHER_BYTES // (4 * num_items))
    b = 0
    while b < users.size:
      # Users b..e-1 whose rows together fit the budget (at least one user).
      total = np.cumsum(ends[b:] - starts[b:])
      e = b + max(1, int(np.searchsorted(total, max_rows, side="right")))
      lengths = ends[b:e] - starts[b:e]
      has = lengths > 0
      if has.any():
        rows = np.concatenate([self.items[s:t] for s, t in zip(starts[b:e], ends[b:e])])
        seg = np.cumsum(lengths[has]) - lengths[has]
        out[b + np.flatnonzero(has)] = np.add.reduceat(self.b_NxN[rows], seg, axis=0)
      b = e
    return out


def ease(train, *, lam: float) -> Ease:
  """EASE (Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019).

    P = (X^T X + lam I)^-1,   B = I - P diag(1 / diag(P)),   so diag(B) = 0 and
    B_ij = -P_ij / P_jj for i != j;   scores s_u = x_u B.

  All in float32 in one [N, N] buffer: the Gram matrix (`gram`) gets lam on its diagonal,
  is inverted in place by a Cholesky factorisation (`inverse_spd_inplace`; by 2 x 2
  blocks above 24,576 items; one component of the user-item graph at a time when none
  holds more than half the items, `_inverse_by_components`), and P is turned into B in
  place; peak memory is about 4 N^2 bytes (6.7 GB for Gowalla's 40,981 items), plus 3 N^2
  bytes of scratch when blocked, or up to 2 N^2 bytes of component blocks when inverted
  by components, plus the train pairs. Time is dominated by the inverse, N^3 to 1.25 N^3 flops.

  Gowalla (LightGCN split, `readers.load_lightgcn`), recall_full@20 / ndcg@20 by
  `metrics.evaluate_scores`: lam 80 0.1765 / 0.1467, lam 500 0.1693 / 0.1399 (BARS
  publishes 0.1765 / 0.1467 and 0.1693); on 2 cores each lambda took about 460 s to fit
  and 150-175 s to evaluate, peak RSS 11.9 GB.
  """
  if isinstance(lam, bool) or not isinstance(lam, (int, float, np.number)) or not lam > 0:
    raise ValueError(f"ease: lam must be a positive number, got {lam!r}")
  g = gram(train)
  offsets, items, num_users, num_items = _binary_csr(train)
  g[np.diag_indices(num_items)] += np.float32(lam)
  p = _inverse_by_components(g, item_components(offsets, items, num_users, num_items))
  del g
  scale = -1.0 / np.diag(p).astype(np.float32)  # copy, before p is overwritten
  for r0 in range(0, num_items, _ROW_BLOCK):
    p[r0 : r0 + _ROW_BLOCK] *= scale[None, :]
  p[np.diag_indices(num_items)] = 0.0
  return Ease(p, offsets, items)


# ----------------------------------------------------------------------------------------
# The launcher's fits (config model.name = "popularity" / "ease").


def fit_popularity(config, train) -> Popularity:
  del config
  return popularity(train)


def fit_ease(config, train) -> Ease:
  return ease(train, lam=float(config.model.ease_lambda))

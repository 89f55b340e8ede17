"""Retrieval losses over embeddings: full softmax, sampled softmax, positive-only, gravity.

All losses take embeddings (not models), score a pair by its dot product divided by
``temperature``, and return a per-example loss ``[B]`` (the caller reduces), except
``gravity`` which is a scalar regularizer. Everything here is pure and jit-able.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from jaxrec import chunked

Array = jax.Array

POSITIVE_ONLY_KINDS = ("squared", "logistic")

# A good `full_softmax(..., chunk_size=)` on CPU (benchmarks/full_softmax_memory.py, B=1024,
# N=1M, D=64 on 2 cores: 1024..16384 all within ~25%; 4096 ahead of 2048 by 6-10% when
# interleaved in one process, and on benchmarks.peers' W2 (N=100k); docs/RESULTS.md).
# The launcher's loss.chunk_size defaults to 0 (unchunked); this is the value the
# benchmarks use. Accelerators likely prefer larger chunks; not tuned here.
DEFAULT_CHUNK_SIZE = 4096


def _check_temperature(temperature) -> None:
  """Rejects a concrete non-positive temperature (a traced one is taken on trust)."""
  if isinstance(temperature, numbers.Real) and not temperature > 0:
    raise ValueError(f"temperature must be > 0, got {temperature!r}")


def _check_2d(name: str, x) -> None:
  if jnp.ndim(x) != 2:
    raise ValueError(f"{name} must be 2-D, got shape {jnp.shape(x)}")


# ---------------------------------------------------------------------------------------
# Full softmax.
# ---------------------------------------------------------------------------------------


def full_softmax(
    query_BxD: Array,
    items_NxD: Array,
    pos_ids: Array,
    pos_weights: Optional[Array] = None,
    *,
    temperature=1.0,
    chunk_size: Optional[int] = None,
) -> Array:
  """Cross-entropy of the softmax over all N items -> per-example loss [B].

  With scores s_bj = q_b . v_j / T and positives p with weights w_bp (a probability
  distribution over the row's positives; padding positives have weight 0):

    loss_b = sum_p w_bp * (logsumexp_j s_bj - s_{b,pos_bp})
           = logsumexp_j s_bj - sum_p w_bp s_{b,pos_bp}     when sum_p w_bp = 1.

  Args:
    query_BxD: queries.
    items_NxD: the whole item table.
    pos_ids: int [B] (one positive per row) or [B,P] (several positives).
    pos_weights: [B,P] weights of the positives; None means uniform 1/P (or 1 for [B]).
      Ids of weight-0 padding may be any int (they are clipped into range and ignored).
    temperature: python float or traced scalar > 0.
    chunk_size: None computes the [B,N] score matrix directly. An int streams the items
      in chunks of that many rows (`chunked.logsumexp`): a streaming log-sum-exp forward
      and a custom VJP that recomputes each chunk's scores in the backward pass, so no
      [B,N] array exists in either pass (memory O(B*chunk_size + N*D)). N need not be a
      multiple of it.

  Reference: the "full softmax" of Covington et al. 2016 (YouTube DNN) / Jean et al. 2015;
  the chunked custom VJP is the memory-efficient softmax of Rabe & Staats 2021.
  """
  _check_2d("query_BxD", query_BxD)
  _check_2d("items_NxD", items_NxD)
  batch, dim = query_BxD.shape
  num_items = items_NxD.shape[0]
  if items_NxD.shape[1] != dim:
    raise ValueError(f"items_NxD has dim {items_NxD.shape[1]} but query_BxD has dim {dim}")
  if num_items < 1:
    raise ValueError("items_NxD must have at least one row")
  _check_temperature(temperature)
  if chunk_size is not None and (
      not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1
  ):
    raise ValueError(f"chunk_size must be None or a positive int, got {chunk_size!r}")

  pos_ids = jnp.asarray(pos_ids)
  if not jnp.issubdtype(pos_ids.dtype, jnp.integer):
    raise ValueError(f"pos_ids must be integer, got dtype {pos_ids.dtype}")
  if pos_ids.ndim == 1:
    pos_ids_BxP = pos_ids[:, None]
    if pos_weights is not None:
      raise ValueError(
          "pos_weights is only meaningful with pos_ids of shape [B,P]; "
          f"got pos_ids of shape {pos_ids.shape}"
      )
  elif pos_ids.ndim == 2:
    pos_ids_BxP = pos_ids
  else:
    raise ValueError(f"pos_ids must have shape [B] or [B,P], got {pos_ids.shape}")
  if pos_ids_BxP.shape[0] != batch:
    raise ValueError(f"pos_ids has batch {pos_ids_BxP.shape[0]} but query_BxD has {batch}")
  num_pos = pos_ids_BxP.shape[1]
  if pos_weights is None:
    weights_BxP = jnp.full(pos_ids_BxP.shape, 1.0 / num_pos, query_BxD.dtype)
  else:
    weights_BxP = jnp.asarray(pos_weights, query_BxD.dtype)
    if weights_BxP.shape != pos_ids_BxP.shape:
      raise ValueError(
          f"pos_weights shape {weights_BxP.shape} != pos_ids shape " f"{pos_ids_BxP.shape}"
      )

  # Temperature folded into the query: s = (q / T) . v; d/dT then flows by autodiff.
  scaled_BxD = query_BxD / jnp.asarray(temperature, query_BxD.dtype)
  if chunk_size is None:
    lse_B = jax.nn.logsumexp(jnp.dot(scaled_BxD, items_NxD.T), axis=1)
  else:
    lse_B = chunked.logsumexp(scaled_BxD, items_NxD, chunk_size)

  pos_BxPxD = jnp.take(items_NxD, pos_ids_BxP, axis=0, mode="clip")
  pos_scores_BxP = jnp.einsum("bd,bpd->bp", scaled_BxD, pos_BxPxD)
  # where(): a weight-0 padding positive contributes exactly nothing.
  weighted_BxP = jnp.where(weights_BxP != 0, weights_BxP * pos_scores_BxP, 0.0)
  return jnp.sum(weights_BxP, axis=1) * lse_B - jnp.sum(weighted_BxP, axis=1)


# ---------------------------------------------------------------------------------------
# Sampled softmax.
# ---------------------------------------------------------------------------------------


def _as_bk(name: str, x, batch: int, num_neg: int) -> Array:
  """Validates a [K] or [B,K] per-negative array and broadcasts it to [B,K]."""
  x = jnp.asarray(x)
  if x.shape == (num_neg,):
    return jnp.broadcast_to(x[None, :], (batch, num_neg))
  if x.shape == (batch, num_neg):
    return x
  raise ValueError(
      f"{name} must have shape [K]=({num_neg},) or [B,K]=({batch}, {num_neg}), " f"got {x.shape}"
  )


def sampled_softmax(
    query_BxD: Array,
    pos_BxD: Array,
    neg,
    *,
    pos_ids: Optional[Array] = None,
    neg_ids: Optional[Array] = None,
    neg_log_q: Optional[Array] = None,
    pos_log_q: Optional[Array] = None,
    temperature=1.0,
    remove_accidental_hits: bool = True,
) -> Array:
  """Softmax cross-entropy over [positive, K negatives] -> per-example loss [B].

    o_b   = q_b . pos_b / T  - log(K * q(pos_b))       (second term if pos_log_q given)
    o_bk  = q_b . neg_bk / T - log(K * q(neg_bk))      (second term if neg_log_q given)
    o_bk  = -big  where neg_ids[b,k] == pos_ids[b]     (if remove_accidental_hits)
    loss_b = logsumexp(o_b, o_b1..o_bK) - o_b

  K is the number of negatives (hits included), so log(K q) is the log expected count of a
  draw, as in tf.nn.sampled_softmax_loss (Jean et al. 2015; Bengio & Senecal 2008; the
  logQ correction of Yi et al. 2019). With every item once as a negative, q = 1/N and hits
  removed, this equals `full_softmax`.

  Args:
    query_BxD, pos_BxD: queries and their positive item embeddings.
    neg: negative embeddings, [K,D] shared by the batch or [B,K,D] per example.
    pos_ids: int [B]; neg_ids: int [K] or [B,K]. Both are needed to remove hits.
    neg_log_q: [K] or [B,K] log-probability that one draw returns that negative.
    pos_log_q: [B] the same for the positive.
    temperature: python float or traced scalar > 0.
    remove_accidental_hits: mask negatives equal to the row's positive (jnp.where to a
      large finite negative, so gradients stay finite).
  """
  _check_2d("query_BxD", query_BxD)
  _check_2d("pos_BxD", pos_BxD)
  if pos_BxD.shape != query_BxD.shape:
    raise ValueError(f"pos_BxD shape {pos_BxD.shape} != query_BxD shape {query_BxD.shape}")
  _check_temperature(temperature)
  batch, dim = query_BxD.shape
  neg = jnp.asarray(neg)
  if neg.ndim not in (2, 3) or neg.shape[-1] != dim or (neg.ndim == 3 and neg.shape[0] != batch):
    raise ValueError(f"neg must have shape [K,{dim}] or [{batch},K,{dim}], got {neg.shape}")
  num_neg = neg.shape[-2]

  inv_t = 1.0 / jnp.asarray(temperature, query_BxD.dtype)
  pos_logit_B = jnp.sum(query_BxD * pos_BxD, axis=1) * inv_t
  if neg.ndim == 2:
    neg_logits_BxK = jnp.dot(query_BxD, neg.T) * inv_t
  else:
    neg_logits_BxK = jnp.einsum("bd,bkd->bk", query_BxD, neg) * inv_t

  log_k = math.log(num_neg) if num_neg > 0 else 0.0
  if neg_log_q is not None:
    neg_logits_BxK = neg_logits_BxK - (log_k + _as_bk("neg_log_q", neg_log_q, batch, num_neg))
  if pos_log_q is not None:
    pos_log_q = jnp.asarray(pos_log_q)
    if pos_log_q.shape != (batch,):
      raise ValueError(f"pos_log_q must have shape [B]=({batch},), got {pos_log_q.shape}")
    pos_logit_B = pos_logit_B - (log_k + pos_log_q)

  if remove_accidental_hits and (pos_ids is None) != (neg_ids is None):
    raise ValueError(
        "remove_accidental_hits=True needs both pos_ids and neg_ids (or "
        "neither, to skip masking); got only "
        f"{'pos_ids' if neg_ids is None else 'neg_ids'}"
    )
  if remove_accidental_hits and pos_ids is not None:
    pos_ids = jnp.asarray(pos_ids)
    if pos_ids.shape != (batch,):
      raise ValueError(f"pos_ids must have shape [B]=({batch},), got {pos_ids.shape}")
    hits_BxK = _as_bk("neg_ids", neg_ids, batch, num_neg) == pos_ids[:, None]
    # Finite (not -inf) so that softmax and its gradient stay NaN-free; exp() of it is 0.
    big_negative = jnp.finfo(neg_logits_BxK.dtype).min / 2
    neg_logits_BxK = jnp.where(hits_BxK, big_negative, neg_logits_BxK)

  # logsumexp over [o_b, o_b1..o_bK] without building that [B, 1+K] array (a copy of the
  # whole logits, and a slice of it in the backward pass)
  max_neg_B = jnp.max(neg_logits_BxK, axis=1, initial=-jnp.inf)  # K = 0: -inf
  max_B = jax.lax.stop_gradient(jnp.maximum(pos_logit_B, max_neg_B))
  sum_B = jnp.exp(pos_logit_B - max_B) + jnp.sum(jnp.exp(neg_logits_BxK - max_B[:, None]), axis=1)
  return max_B + jnp.log(sum_B) - pos_logit_B


# ---------------------------------------------------------------------------------------
# Positive-only losses and the gravity regularizer.
# ---------------------------------------------------------------------------------------


def positive_only(query_BxD: Array, pos_BxD: Array, *, kind: str = "squared") -> Array:
  """Loss from positive pairs alone -> [B]; s_b = q_b . pos_b.

    "squared":  (1 - s_b)^2            (implicit MF restricted to observed pairs)
    "logistic": -log sigmoid(s_b)      (= softplus(-s_b), computed stably)

  Without negatives (or a `gravity` term) nothing pushes unrelated items apart: this loss
  is meant to exhibit folding (Xin et al. 2017, "Folding: why good models sometimes make
  spurious recommendations").
  """
  if kind not in POSITIVE_ONLY_KINDS:
    raise ValueError(f"kind must be one of {POSITIVE_ONLY_KINDS}, got {kind!r}")
  _check_2d("query_BxD", query_BxD)
  if jnp.shape(pos_BxD) != jnp.shape(query_BxD):
    raise ValueError(
        f"pos_BxD shape {jnp.shape(pos_BxD)} != query_BxD shape " f"{jnp.shape(query_BxD)}"
    )
  scores_B = jnp.sum(query_BxD * pos_BxD, axis=1)
  if kind == "squared":
    return jnp.square(1.0 - scores_B)
  return -jax.nn.log_sigmoid(scores_B)


def gravity(query_MxD: Array, items_NxD: Array) -> Array:
  """Mean over all M*N pairs of (q_i . v_j)^2, in O((M+N) D^2) -> scalar.

    sum_ij (q_i . v_j)^2 = sum_ij q_i^T v_j v_j^T q_i = <Q^T Q, V^T V>_F,

  so the mean is sum(G_q * G_v) / (M N) with the D x D Gramians G_q = Q^T Q, G_v = V^T V;
  the M x N score matrix is never formed. Reference: Krichene et al. 2019, "Efficient
  training on very large corpora via Gramian estimation".
  """
  _check_2d("query_MxD", query_MxD)
  _check_2d("items_NxD", items_NxD)
  if query_MxD.shape[1] != items_NxD.shape[1]:
    raise ValueError(
        f"query_MxD has dim {query_MxD.shape[1]} but items_NxD has dim " f"{items_NxD.shape[1]}"
    )
  gram_q_DxD = jnp.dot(query_MxD.T, query_MxD)
  gram_v_DxD = jnp.dot(items_NxD.T, items_NxD)
  return jnp.sum(gram_q_DxD * gram_v_DxD) / (query_MxD.shape[0] * items_NxD.shape[0])


# --------------------------------------------------------------------------------------
# The registry: config `loss.name` -> a record with one calling convention.


class LossInputs(NamedTuple):
  """What a train step hands a registered loss; rows as the model scores them.

  neg_log_q is None when the step applies no logQ correction, pos_log_q when it does not
  correct the positive (`StepSpec.correct_positive`). `full_softmax` is the
  full-catalogue kernel (the step passes `sharding.sharded_full_softmax`, which is this
  function on one device)."""

  pos_ids_B: Array
  pos_BxD: Array
  neg_ids: Optional[Array] = None  # [K] or [B,K]
  neg_rows: Optional[Array] = None  # [K,D] or [B,K,D]
  neg_log_q: Optional[Array] = None
  items_NxD: Optional[Array] = None  # every item row (losses that read them)
  pos_log_q: Optional[Array] = None  # [B]
  full_softmax: Callable[..., Array] = full_softmax


def _full_loss(query_BxD, inputs: LossInputs, spec):
  return inputs.full_softmax(
      query_BxD,
      inputs.items_NxD,
      inputs.pos_ids_B,
      temperature=spec.temperature,
      chunk_size=spec.chunk_size,
  )


def _sampled_loss(query_BxD, inputs: LossInputs, spec):
  return sampled_softmax(
      query_BxD,
      inputs.pos_BxD,
      inputs.neg_rows,
      pos_ids=inputs.pos_ids_B,
      neg_ids=inputs.neg_ids,
      neg_log_q=inputs.neg_log_q,
      pos_log_q=inputs.pos_log_q,
      temperature=spec.temperature,
  )


def _positive_only_loss(query_BxD, inputs: LossInputs, spec):
  return positive_only(query_BxD, inputs.pos_BxD, kind=spec.positive_only_kind)


@dataclasses.dataclass(frozen=True)
class Loss:
  """A registered loss: `fn(query_BxD, inputs: LossInputs, spec) -> [B]` per-example
  losses (`spec` a `jaxrec.config.LossSpec`). needs_negatives: the step draws negatives
  (config sampler.*); reads_all_items: the loss reads every item row, so the step
  differentiates the whole item table (the dense path)."""

  fn: Callable[..., Array]
  help: str
  needs_negatives: bool = False
  reads_all_items: bool = False


REGISTRY: dict[str, Loss] = {
    "full": Loss(
        _full_loss, "softmax cross-entropy over the whole catalogue", reads_all_items=True
    ),
    "sampled": Loss(
        _sampled_loss,
        "softmax over [positive, sampled negatives], logQ " "corrected (sampler.*)",
        needs_negatives=True,
    ),
    "positive_only": Loss(
        _positive_only_loss, "positive pairs alone (loss.positive_only_kind)" "; meant to fold"
    ),
}


def help_text() -> str:
  """One line per registered loss (for the launcher's --help)."""
  return "\n".join(f"{name}: {entry.help}" for name, entry in REGISTRY.items())

"""Gradient fidelity of sampled softmax: how far is E[sampled gradient] from the exact one?

For a batch (query_BxD, items_NxD, pos_ids_B) let L(Q, V) = mean_b full_softmax_b be the
exact loss and g* = grad_{Q,V} L its gradient. A sampler draws negatives, and the sampled
loss L~ = mean_b sampled_softmax_b (with or without the logQ correction) gives a random
gradient g. Over R independent draws g_1..g_R with mean g_bar:

  bias_cosine    = 1 - cos(g_bar, g*)
  rel_norm_error = ||g_bar - g*|| / ||g*||
  variance       = (1/R) sum_r ||g_r - g_bar||^2 / ||g*||^2

(one vector = the concatenated gradients w.r.t. the queries and the whole item table).
Sampled softmax is biased for any finite K (Bengio & Senecal 2008); the bias shrinks with K
and is smallest when q is close to the model's softmax (Blanc & Rendle, ICML 2018,
"Adaptive sampled softmax with kernel based sampling"). The mean of R draws also carries
Monte-Carlo noise: E||g_bar - g*||^2 = ||bias||^2 + variance * ||g*||^2 / R.

The positive's logit is never corrected here (pos_log_q=None): that is the form whose loss
converges to the full softmax as K grows.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from jaxrec import losses, samplers
from jaxrec.config import SamplerSpec

Array = jax.Array


def make_sampler(
    name: str,
    *,
    num_items: int,
    num_samples: int,
    counts=None,
    unigram_alpha=1.0,
    replace: bool = True,
    temperature=1.0,
    pool_size: Optional[int] = None,
    chunk_size: Optional[int] = None,
    num_uniform: Optional[int] = None,
) -> Callable[..., samplers.Negatives]:
  """-> sample(key, query_BxD, items_NxD, pos_ids_B, freq_state=None) -> Negatives.

  The registered sampler `name` (`samplers.REGISTRY`) outside a train step: num_samples
  is K (for "mixed", the uniform part B' unless num_uniform is given; "in_batch" and
  "mixed" use the whole batch as in-batch negatives). A sampler that reads the unigram
  table needs `counts` (the table is built here, once); one that uses the frequency
  estimator needs `freq_state` at call time; the pool samplers need `pool_size`. Item ids
  are their own popularity ranks (log_uniform).
  """
  entry = samplers.get(name)
  num_items = samplers.check_int("num_items", num_items, 1)
  num_samples = samplers.check_int("num_samples", num_samples, 1)
  if "pool_size" in entry.config_keys and pool_size is None:
    raise ValueError(f"sampler {name!r} needs pool_size")
  table = None
  if entry.uses_unigram:
    if counts is None:
      raise ValueError(f"sampler {name!r} needs counts")
    table = samplers.unigram_table(counts, unigram_alpha)
  spec = SamplerSpec(
      name=name,
      num_negatives=num_samples,
      replace=replace,
      alpha=float(unigram_alpha),
      pool_size=pool_size or 0,
      temperature=temperature,
      num_uniform=num_uniform or num_samples,
      chunk_size=chunk_size,
  )

  def sample(key, query_BxD=None, items_NxD=None, pos_ids_B=None, freq_state=None):
    if entry.uses_freq and freq_state is None:
      raise ValueError(f"sampler {name!r} needs freq_state (see freq_init/freq_update)")
    inputs = samplers.SamplerInputs(
        num_items,
        pos_ids_B,
        freq_state,
        query_BxD,
        items_NxD,
        table,
        jnp.arange(num_items, dtype=jnp.int32),
    )
    return entry.draw(key, inputs, spec)

  return sample


def exact_gradient(
    query_BxD: Array, items_NxD: Array, pos_ids_B: Array, *, temperature=1.0
) -> tuple[Array, Array]:
  """grad of mean_b full_softmax_b w.r.t. (query_BxD, items_NxD)."""

  def loss(q, v):
    return jnp.mean(losses.full_softmax(q, v, pos_ids_B, temperature=temperature))

  return jax.grad(loss, argnums=(0, 1))(query_BxD, items_NxD)


def sampled_gradient(
    key: Array,
    query_BxD: Array,
    items_NxD: Array,
    pos_ids_B: Array,
    sample_fn: Callable[..., samplers.Negatives],
    *,
    logq: bool = True,
    temperature=1.0,
    freq_state=None,
) -> tuple[Array, Array]:
  """grad of mean_b sampled_softmax_b w.r.t. (query_BxD, items_NxD) for one draw.

  `sample_fn` has `make_sampler`'s calling convention. Negatives are drawn from
  stop-gradient embeddings (ids and log_q are constants of the loss, as in training);
  accidental hits are removed.
  """
  neg = sample_fn(
      key, jax.lax.stop_gradient(query_BxD), jax.lax.stop_gradient(items_NxD), pos_ids_B, freq_state
  )
  neg_log_q = jax.lax.stop_gradient(neg.log_q) if logq else None

  def loss(q, v):
    return jnp.mean(
        losses.sampled_softmax(
            q,
            v[pos_ids_B],
            v[neg.ids],
            pos_ids=pos_ids_B,
            neg_ids=neg.ids,
            neg_log_q=neg_log_q,
            temperature=temperature,
        )
    )

  return jax.grad(loss, argnums=(0, 1))(query_BxD, items_NxD)


def _flat(grads: tuple[Array, Array]) -> Array:
  return jnp.concatenate([grads[0].reshape(-1), grads[1].reshape(-1)])


def _sampler_and_chunk(sampler, num_samples, num_items, sampler_kwargs, num_draws, draws_per_chunk):
  """-> (sample_fn, draws per vmapped group: the largest divisor of num_draws that is at
  most draws_per_chunk), validating the arguments shared by the diagnostics."""
  num_draws = samplers.check_int("num_draws", num_draws, 1)
  draws_per_chunk = samplers.check_int("draws_per_chunk", draws_per_chunk, 1)
  if isinstance(sampler, str):
    if num_samples is None:
      raise ValueError(f"sampler {sampler!r} given by name needs num_samples")
    sample_fn = make_sampler(
        sampler, num_items=num_items, num_samples=num_samples, **(sampler_kwargs or {})
    )
  elif callable(sampler):
    sample_fn = sampler
  else:
    raise ValueError(
        f"sampler must be a name in samplers.REGISTRY ({', '.join(samplers.REGISTRY)}) "
        f"or a callable, got {sampler!r}"
    )
  per_chunk = min(draws_per_chunk, num_draws)
  while num_draws % per_chunk:
    per_chunk -= 1
  return sample_fn, per_chunk


def gradient_fidelity(
    key: Array,
    query_BxD: Array,
    items_NxD: Array,
    pos_ids_B: Array,
    sampler: Union[str, Callable[..., samplers.Negatives]],
    num_samples: Optional[int] = None,
    *,
    num_draws: int = 64,
    logq: bool = True,
    temperature=1.0,
    freq_state: Optional[samplers.FreqState] = None,
    sampler_kwargs: Optional[dict] = None,
    draws_per_chunk: int = 8,
) -> dict[str, float]:
  """Bias and variance of the sampled-softmax gradient vs the exact full-softmax one.

  Args:
    key: PRNG key; draw r uses fold_in(key, r).
    query_BxD, items_NxD, pos_ids_B: the batch and the item table (as in `losses`).
    sampler: a name in `samplers.REGISTRY` (built with `make_sampler(name, num_items=N,
      num_samples=num_samples, **sampler_kwargs)`) or a function with make_sampler's
      calling convention.
    num_samples: K, required with a sampler name.
    num_draws: R independent draws (vmapped in groups of `draws_per_chunk`, scanned over
      groups; mean and spread are combined with Chan et al.'s pairwise update, so memory
      is O(draws_per_chunk * (B + N) * D)).
    logq: subtract log(K q) from the negative logits (the logQ correction) or not.
    temperature: of the loss (a hard sampler's own temperature goes in sampler_kwargs).
    freq_state: the Yi et al. estimator state for "in_batch" / "mixed".

  Returns: {"bias_cosine", "rel_norm_error", "variance", "exact_norm"} as python floats.
  """
  sample_fn, per_chunk = _sampler_and_chunk(
      sampler, num_samples, items_NxD.shape[0], sampler_kwargs, num_draws, draws_per_chunk
  )
  num_chunks = num_draws // per_chunk
  pos_ids_B = jnp.asarray(pos_ids_B)

  @jax.jit
  def run(key, query_BxD, items_NxD, freq_state):
    g_star = _flat(exact_gradient(query_BxD, items_NxD, pos_ids_B, temperature=temperature))

    def one(draw):
      return _flat(
          sampled_gradient(
              jax.random.fold_in(key, draw),
              query_BxD,
              items_NxD,
              pos_ids_B,
              sample_fn,
              logq=logq,
              temperature=temperature,
              freq_state=freq_state,
          )
      )

    def body(carry, draws):
      count, mean, m2 = carry
      g_CxP = jax.vmap(one)(draws)
      chunk_mean = jnp.mean(g_CxP, axis=0)
      chunk_m2 = jnp.sum(jnp.square(g_CxP - chunk_mean))
      new_count = count + per_chunk
      delta = chunk_mean - mean
      mean = mean + delta * (per_chunk / new_count)
      m2 = m2 + chunk_m2 + jnp.sum(jnp.square(delta)) * (count * per_chunk / new_count)
      return (new_count, mean, m2), None

    init = (jnp.zeros((), jnp.float32), jnp.zeros_like(g_star), jnp.zeros((), jnp.float32))
    draws = jnp.arange(num_draws).reshape(num_chunks, per_chunk)
    (_, g_bar, m2), _ = jax.lax.scan(body, init, draws)
    norm2 = jnp.sum(jnp.square(g_star))
    # 1 - cos(a, b) = ||a/|a| - b/|b|||^2 / 2: no float32 cancellation when cos ~ 1 (the
    # direct 1 - a.b/(|a||b|) has an error floor ~1e-4 for vectors of ~1e6 entries).
    unit_diff = g_bar / jnp.linalg.norm(g_bar) - g_star / jnp.sqrt(norm2)
    return {
        "bias_cosine": 0.5 * jnp.sum(jnp.square(unit_diff)),
        "rel_norm_error": jnp.linalg.norm(g_bar - g_star) / jnp.sqrt(norm2),
        "variance": m2 / num_draws / norm2,
        "exact_norm": jnp.sqrt(norm2),
    }

  out = run(key, query_BxD, items_NxD, freq_state)
  return {k: float(v) for k, v in out.items()}


def logit_push(
    key: Array,
    query_BxD: Array,
    items_NxD: Array,
    pos_ids_B: Array,
    sampler: Union[str, Callable[..., samplers.Negatives]],
    num_samples: Optional[int] = None,
    *,
    num_draws: int = 64,
    logq: bool = True,
    temperature=1.0,
    freq_state: Optional[samplers.FreqState] = None,
    sampler_kwargs: Optional[dict] = None,
    draws_per_chunk: int = 8,
) -> tuple[Array, Array]:
  """How hard the partition term pushes down each item's logit, exact vs sampled.

  Add an offset b_j to every score of item j (s_bj = q_b.v_j / T + b_j). The loss is
  -s_b,pos + log Z_b, and the push on item j is d/db_j of mean_b log Z_b at b = 0:
    exact   = mean_b p_bj,  p_b = softmax over all N items (full softmax);
    sampled = E_draws[ mean_b sum_{k: id_k = j} w_bk ], w_b = softmax over [positive,
              negatives] with the negatives' logits corrected by -log(K q_k) when `logq`
              (accidental hits masked), as in `losses.sampled_softmax`.
  Both sum to 1 over the items. An item whose sampled push is below its exact push is
  pushed down less than the full softmax would push it, so its score drifts up; with a
  popularity proposal and small K that is the long tail (Bengio & Senecal 2008 on the bias
  of sampled softmax; Blanc & Rendle 2018: it vanishes only as q approaches p).

  Computed as the gradient of the real losses w.r.t. one extra embedding column (queries
  get T, items 0, so scores are unchanged and that column's gradient is d/db_j), plus the
  positives' own -1/B. Arguments as in `gradient_fidelity`. Returns (exact_N, sampled_N),
  the sampled one averaged over `num_draws` draws (draw r uses fold_in(key, r)).
  """
  num_items = items_NxD.shape[0]
  sample_fn, per_chunk = _sampler_and_chunk(
      sampler, num_samples, num_items, sampler_kwargs, num_draws, draws_per_chunk
  )
  pos_ids_B = jnp.asarray(pos_ids_B)
  batch = pos_ids_B.shape[0]

  @jax.jit
  def run(key, query_BxD, items_NxD, freq_state):
    q_aug = jnp.concatenate([query_BxD, jnp.full((batch, 1), temperature, query_BxD.dtype)], axis=1)
    v_aug = jnp.concatenate([items_NxD, jnp.zeros((num_items, 1), items_NxD.dtype)], axis=1)
    pos_share_N = jnp.zeros(num_items, jnp.float32).at[pos_ids_B].add(1.0 / batch)
    exact = exact_gradient(q_aug, v_aug, pos_ids_B, temperature=temperature)[1][:, -1]

    def one(draw):
      g = sampled_gradient(
          jax.random.fold_in(key, draw),
          q_aug,
          v_aug,
          pos_ids_B,
          sample_fn,
          logq=logq,
          temperature=temperature,
          freq_state=freq_state,
      )
      return g[1][:, -1]

    def body(total, draws):
      return total + jnp.sum(jax.vmap(one)(draws), axis=0), None

    draws = jnp.arange(num_draws).reshape(num_draws // per_chunk, per_chunk)
    total, _ = jax.lax.scan(body, jnp.zeros(num_items, jnp.float32), draws)
    return exact + pos_share_N, total / num_draws + pos_share_N

  return run(key, query_BxD, items_NxD, freq_state)


# --------------------------------------------------------------------------------------
# Nested samplers: K_max draws, any prefix K of them a valid K-sample (for estimating the
# gradient bias at every K <= K_max from the same draws, experiments/gradient_bias.py).


class NestedSampler(NamedTuple):
  """A sampler drawing K_max negatives at once, read at any K <= K_max.

  draw(key, query_BxD, items_NxD) -> (ids, log_q): [S] shared or [B,S] per example.
  corrections(ids, log_q, k) -> (active, c_loss, c_true), shaped like ids: which slots
    make up the K-sample, the logit correction the sampler applies (log expected count as
    the loss uses it) and the true log expected count of the id among the active slots.
  support_N: bool [N], the items with q > 0.
  negatives_per_k: number of negatives a K-sample holds (2 for mixed, else 1).
  """

  draw: Callable
  corrections: Callable
  support_N: np.ndarray
  negatives_per_k: int


def _slots(ids):
  return jnp.arange(ids.shape[-1], dtype=jnp.float32)


def iid_corrections(ids, log_q, k):
  """K i.i.d. draws: the first K slots; expected count K q for the loss and for IS."""
  active = jnp.broadcast_to(_slots(ids) < k, ids.shape)
  c = jnp.log(k) + log_q
  return active, c, c


def in_batch_corrections(ids, log_q, k):
  """q = f (data frequency); the in_batch sampler corrects by its estimator's fixed point,
  the expected count of j in a batch of K, log(K f_j): the i.i.d. corrections."""
  return iid_corrections(ids, log_q, k)


def _nested_in_batch(num_items: int, k_max: int, counts_N: np.ndarray) -> NestedSampler:
  """The batch is K i.i.d. training positives: q = the data frequency f; the sampler's
  correction is its estimator's fixed point, log(K f_j) (Yi et al. 2019, p = |B| q)."""
  del num_items
  table = samplers.unigram_table(counts_N, 1.0, pseudo_count=0.0)  # the data frequency
  support = np.asarray(counts_N) > 0
  return NestedSampler(
      lambda key, q, v: samplers.unigram_sample(key, table, k_max), in_batch_corrections, support, 1
  )


def _nested_mixed(num_items: int, k_max: int, counts_N: np.ndarray) -> NestedSampler:
  """K in-batch positives (as in_batch) + K uniform ids; correction log(K f_j + K/N), as
  `samplers.mixed` at its estimator's fixed point (the mixture's expected count)."""
  table = samplers.unigram_table(counts_N, 1.0, pseudo_count=0.0)  # the data frequency
  log_f_N = table.log_q_N

  def draw_mixed(key, q, v):
    k_batch, k_uniform = jax.random.split(key)
    batch = samplers.unigram_sample(k_batch, table, k_max).ids
    extra = samplers.uniform(k_uniform, num_items, k_max).ids
    ids = jnp.concatenate([batch, extra])
    return ids, log_f_N[ids]

  def mixed_corrections(ids, log_f, k):
    slot = _slots(ids)
    active = (slot < k) | ((slot >= k_max) & (slot - k_max < k))
    c = jnp.log(k * jnp.exp(log_f) + k / num_items)
    return active, c, c

  return NestedSampler(draw_mixed, mixed_corrections, np.ones(num_items, bool), 2)


# Samplers whose negatives are the batch's own positives have no i.i.d. law of their own:
# the diagnostic models the batch (above). Every registered i.i.d. sampler with a proper
# log_q needs nothing here: `make_nested` reads its registry entry.
_BATCH_MODELS = {"in_batch": _nested_in_batch, "mixed": _nested_mixed}


def nested_names() -> tuple[str, ...]:
  """The registered samplers the nested diagnostic can measure."""
  return tuple(
      n for n, e in samplers.REGISTRY.items() if n in _BATCH_MODELS or (e.iid and e.proper_log_q)
  )


def make_nested(
    name: str,
    *,
    num_items: int,
    k_max: int,
    counts_N: np.ndarray,
    unigram_alpha: float = 0.75,
    pool_size: int = 256,
    temperature: float = 1.0,
) -> NestedSampler:
  """The nested version of registered sampler `name`: an i.i.d. sampler draws K_max
  negatives with its registry draw (train counts give the unigram table, with exponent
  `unigram_alpha`, and the popularity ranks); in_batch / mixed model the batch as K
  i.i.d. training positives. hard_topk (no proper q) is not offered."""
  if name not in nested_names():
    raise ValueError(
        f"unknown sampler {name!r} for the nested diagnostic; valid: "
        f"{', '.join(nested_names())}"
    )
  counts_N = np.asarray(counts_N, np.float32)
  if name in _BATCH_MODELS:
    return _BATCH_MODELS[name](num_items, k_max, counts_N)
  entry = samplers.REGISTRY[name]
  spec = SamplerSpec(
      name=name,
      num_negatives=k_max,
      alpha=float(unigram_alpha),
      pool_size=pool_size,
      temperature=temperature,
  )
  table = samplers.unigram_table(counts_N, unigram_alpha) if entry.uses_unigram else None
  pop_order = jnp.asarray(np.argsort(-counts_N, kind="stable").astype(np.int32))

  def draw(key, q, v):
    inputs = samplers.SamplerInputs(num_items, None, None, q, v, table, pop_order)
    return entry.draw(key, inputs, spec)

  support = np.ones(num_items, bool)
  if entry.support is not None:
    support = np.asarray(
        entry.support(
            samplers.SamplerInputs(num_items, None, unigram=table, pop_order_N=pop_order), spec
        )
    )
  return NestedSampler(draw, iid_corrections, support, 1)

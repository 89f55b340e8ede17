"""train.batching=epoch: each epoch is a permutation of the interactions, drawn in O(B) a
step by a keyed Feistel permutation (`step.feistel_permute`)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import sweep
from experiments.configs import synthetic
from jaxrec import config, data, step


@pytest.mark.parametrize("n", [1, 2, 3, 5, 16, 17, 100, 1000, 4097])
def test_feistel_permute_is_a_permutation_of_range_n(n):
  """Every position maps into [0, n) and no two collide (domains from 4 to 4n, where
  the cycle walk does most work just above a power of 4); another key, another order."""
  got = np.asarray(step.feistel_permute(jax.random.PRNGKey(0), jnp.arange(n), n))
  np.testing.assert_array_equal(np.sort(got), np.arange(n))
  if n >= 16:
    other = np.asarray(step.feistel_permute(jax.random.PRNGKey(1), jnp.arange(n), n))
    assert (other != got).mean() > 0.5


def test_feistel_permute_sends_a_position_anywhere_uniformly():
  """Over 4,000 keys, where position 0 of [0, 10) lands: each of the 10 values expected
  400 times; chi-square with 9 degrees of freedom below 27.9 (p = 0.001, fixed seed).
  A fixed or affine map would put all 4,000 on one value."""
  keys = jax.random.split(jax.random.PRNGKey(7), 4000)
  first = jax.vmap(lambda k: step.feistel_permute(k, jnp.zeros((1,), jnp.int32), 10)[0])(keys)
  counts = np.bincount(np.asarray(first), minlength=10)
  chi2 = ((counts - 400.0) ** 2 / 400.0).sum()
  assert chi2 < 27.9, counts


def test_epoch_batching_visits_every_interaction_once_per_epoch():
  """The batches `train_step` draws (`step.step_batch`: a new key every step, the run's key
  for the epoch): the B x steps_per_epoch rows of an epoch are distinct, as many as fit
  (the last partial batch is dropped), and the next epoch takes another order."""
  c = synthetic.get_config()
  over = {
      "data.num_users": 60,
      "data.num_items": 40,
      "data.interactions_per_user": 5,
      "train.batching": "epoch",
      "train.batch_size": 16,
  }
  c = sweep.apply_overrides(c, tuple(over.items()))
  world = data.load_data(c.data, 0)
  spec = config.StepSpec.from_config(c)
  ddata = step.device_data(world.train, spec)
  n = ddata.e_items.shape[0]
  per_epoch = n // 16
  state = step.init_state(spec, c, world.train.num_users, world.train.num_items, 3)
  epochs = []
  for e in range(2):
    rows = []
    for s in range(e * per_epoch, (e + 1) * per_epoch):
      b = step.step_batch(spec, ddata, state._replace(step=jnp.int32(s)))
      rows.extend(np.asarray(b.e_B).tolist())
      np.testing.assert_array_equal(b.pos_ids_B, ddata.e_items[b.e_B])
    assert len(set(rows)) == len(rows) == per_epoch * 16 and max(rows) < n
    epochs.append(rows)
  assert epochs[0] != epochs[1]

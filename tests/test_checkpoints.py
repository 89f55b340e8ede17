"""Checkpoints: schedules (by steps, by wall time since the last save, or both); what a
save writes and that it leaves the state free to be donated; older checkpoints restore."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs import synthetic
from jaxrec import train, workdir
import tiny


class _Clock:
  """A clock the test moves by hand."""

  def __init__(self):
    self.now = 100.0

  def __call__(self):
    return self.now


def _saved_steps(tmp_path, every, seconds, times_by_step, final_step):
  clock = _Clock()
  ckpt = workdir.Checkpointer(str(tmp_path), every, seconds, clock=clock)
  state = {"w": np.arange(4, dtype=np.float32)}
  for step in range(1, final_step + 1):
    clock.now = times_by_step[step]
    ckpt.maybe_save(step, state, final=step == final_step)
  ckpt.close()
  return sorted(ckpt._mngr.all_steps()) if ckpt._mngr else []


def test_by_time_saves_once_seconds_have_passed_since_the_last_save(tmp_path):
  # Steps 1..10 at t = 100 + 4 * step; seconds = 10. By hand: the first save when
  # t - 100 >= 10 (step 3, t 112), then t - 112 >= 10 (step 6, t 124), then step 9 (t 136);
  # step 10 is the final save. max_to_keep=2 keeps the last two.
  times = {s: 100.0 + 4 * s for s in range(1, 11)}
  clock = _Clock()
  ckpt = workdir.Checkpointer(str(tmp_path / "a"), 0, 10.0, clock=clock)
  due = []
  for s in range(1, 11):
    clock.now = times[s]
    if ckpt.due(s):
      due.append(s)
      ckpt.maybe_save(s, {"w": np.zeros(2, np.float32)})
  ckpt.close()
  assert due == [3, 6, 9] and ckpt.saves == 3
  assert _saved_steps(tmp_path / "b", 0, 10.0, times, 10) == [9, 10]


def test_steps_and_time_together_and_neither(tmp_path):
  # every = 4 and seconds = 10 with the clock still: saves at 4 and 8 only (by steps).
  still = {s: 100.0 for s in range(1, 10)}
  clock = _Clock()
  ckpt = workdir.Checkpointer(str(tmp_path / "a"), 4, 10.0, clock=clock)
  assert [s for s in range(1, 10) if ckpt.due(s)] == [4, 8]
  ckpt.close()
  # both off: no manager, nothing written, even for the final step
  assert _saved_steps(tmp_path / "b", 0, 0.0, still, 9) == []
  assert not (tmp_path / "b" / "checkpoints").exists()


def test_the_launcher_counts_its_scheduled_saves_and_the_default_is_by_time(tmp_path):
  # 60 steps, a save every 20: steps 20 and 40 are scheduled saves, step 60 the final one
  # (not counted). The synthetic default saves by time only.
  assert synthetic.get_config().train.checkpoint_every == 0
  assert synthetic.get_config().train.checkpoint_seconds == 300.0
  res = train.train_and_evaluate(
      tiny.config(**{"train.checkpoint_every": 20}), str(tmp_path), verbose=False
  )
  assert res["run"]["checkpoint_saves"] == 2
  assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir()) == [40, 60]


def test_the_schedule_is_not_part_of_a_runs_identity(tmp_path):
  # A workdir claimed under one schedule is the same run under another (it resumes); a
  # change of anything the run computes is still refused.
  cfg = workdir.config_to_dict(tiny.config(**{"train.checkpoint_every": 20}))
  other_schedule = workdir.config_to_dict(
      tiny.config(**{"train.checkpoint_every": 0, "train.checkpoint_seconds": 60.0})
  )
  other_run = workdir.config_to_dict(tiny.config(**{"train.checkpoint_every": 20, "seed": 1}))
  assert workdir.same_config(cfg, other_schedule) and not workdir.same_config(cfg, other_run)
  del other_schedule["train"]["checkpoint_seconds"]  # a record from before the key existed
  assert workdir.same_config(cfg, other_schedule)
  workdir.claim(str(tmp_path), cfg, overwrite=False)
  workdir.claim(str(tmp_path), other_schedule, overwrite=False)  # no refusal
  with pytest.raises(ValueError, match="seed"):
    workdir.claim(str(tmp_path), other_run, overwrite=False)


def _donating_add_one():
  return jax.jit(lambda s: jax.tree.map(lambda x: x + 1, s), donate_argnums=0)


def _state():
  return {
      "table": jnp.arange(12, dtype=jnp.float32).reshape(4, 3),
      "step": jnp.asarray(7, jnp.int32),
  }


def test_a_save_leaves_the_state_donatable_and_writes_the_values_it_was_given(tmp_path):
  # The saved values are those at save time, though the next step reuses (donates) the
  # state's buffers right away; a second save writes its own values, not the first's.
  ckpt = workdir.Checkpointer(str(tmp_path / "a"), 1)
  s0 = _state()
  want0 = jax.tree.map(np.array, s0)
  ckpt.maybe_save(1, s0)
  s1 = _donating_add_one()(s0)
  jax.block_until_ready(s1)
  assert s0["table"].is_deleted()  # donated: nothing of the save still holds it
  ckpt.close()
  restored, at = workdir.Checkpointer(str(tmp_path / "a"), 1).restore(_state())
  assert at == 1
  for k in want0:
    np.testing.assert_array_equal(np.asarray(restored[k]), want0[k])
    assert isinstance(restored[k], jax.Array)

  ckpt = workdir.Checkpointer(str(tmp_path / "b"), 1)
  s0 = _state()
  ckpt.maybe_save(1, s0)
  s1 = _donating_add_one()(s0)
  want1 = jax.tree.map(np.array, s1)
  ckpt.maybe_save(2, s1)
  _donating_add_one()(s1)
  ckpt.close()
  restored, at = workdir.Checkpointer(str(tmp_path / "b"), 1).restore(_state())
  assert at == 2
  for k in want1:
    np.testing.assert_array_equal(np.asarray(restored[k]), want1[k])
    np.testing.assert_array_equal(want1[k], np.asarray(_state()[k]) + 1)


def test_a_checkpoint_of_another_state_layout_is_an_error_and_stays(tmp_path):
  """A state whose pytree changed (a renamed field, as the kernel tree's in 5871b82) is
  not a damaged checkpoint: restore names the keys and leaves the checkpoint in place,
  where it used to set it aside and start the run over from step 0."""
  ckpt = workdir.Checkpointer(str(tmp_path), 1)
  ckpt.maybe_save(3, _state(), final=True)
  ckpt.close()
  other = {"tables": _state()["table"], "step": _state()["step"]}
  with pytest.raises(workdir.CheckpointLayoutError, match="step 3 .* another layout.*table"):
    workdir.Checkpointer(str(tmp_path), 1).restore(other)
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["3"]
  restored, at = workdir.Checkpointer(str(tmp_path), 1).restore(_state())  # still whole
  assert at == 3


def test_restores_a_checkpoint_written_by_orbax_standard_save(tmp_path):
  # Workdirs written before the save path changed (orbax StandardSave, zstd) still resume.
  import orbax.checkpoint as ocp

  saved = jax.tree.map(lambda x: x * 3, _state())
  mngr = ocp.CheckpointManager(
      str(tmp_path / "checkpoints"), options=ocp.CheckpointManagerOptions(create=True)
  )
  mngr.save(5, args=ocp.args.StandardSave(saved), force=True)
  mngr.wait_until_finished()
  mngr.close()
  restored, at = workdir.Checkpointer(str(tmp_path), 1).restore(_state())
  assert at == 5
  for k in saved:
    np.testing.assert_array_equal(np.asarray(restored[k]), np.asarray(saved[k]))


def test_saves_and_restores_with_an_orbax_whose_numpy_handler_lacks_the_copy_option(
    tmp_path, monkeypatch
):
  # The GPU machine's orbax has no NumpyHandler(deepcopy_host_arrays=...): the Checkpointer
  # failed there before training started. With such a handler, a save of host and device
  # arrays restores what was written.
  import orbax.checkpoint as ocp

  base = ocp.type_handlers.NumpyHandler

  class OlderNumpyHandler(base):

    def __init__(self, metadata_key=None):
      super().__init__(metadata_key=metadata_key)

  monkeypatch.setattr(ocp.type_handlers, "NumpyHandler", OlderNumpyHandler)
  assert isinstance(workdir.numpy_handler(ocp), OlderNumpyHandler)
  state = {**_state(), "host": np.arange(6, dtype=np.float32) * 2}
  want = jax.tree.map(np.array, state)
  ckpt = workdir.Checkpointer(str(tmp_path), 1)
  ckpt.maybe_save(3, state, final=True)
  ckpt.close()
  restored, at = workdir.Checkpointer(str(tmp_path), 1).restore(state)
  assert at == 3
  for k in want:
    np.testing.assert_array_equal(np.asarray(restored[k]), want[k])

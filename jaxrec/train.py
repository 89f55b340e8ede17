"""The run: `train_and_evaluate(config, workdir)` trains one config and evaluates it.

validate -> claim the workdir -> load data -> init or resume -> the jitted step in a loop
(logging, periodic evaluation, checkpoints) -> final evaluation -> results.json.
The pieces: `jaxrec.config` (validation, the step's static spec), `jaxrec.step` (state
and the step), `jaxrec.evaluate`, `jaxrec.workdir` (files), `jaxrec.wals` (the closed-form
model's run).
"""

from __future__ import annotations

import errno
import math
import os
import time

import ml_collections

from jaxrec import data as data_lib
from jaxrec import evaluate, models, sharding, step, wals
from jaxrec import workdir as workdir_io
from jaxrec.config import ConfigError, StepSpec, check_data_fit, check_splits, validate_config

# Time of the loop's measurements (tests replace it with a fake clock).
clock = time.perf_counter


class NonFiniteLossError(FloatingPointError):
  """The loss became NaN or inf (and config train.skip_nonfinite is off)."""


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    overwrite: bool = False,
    data=None,
    verbose: bool = True,
) -> dict:
  """Trains and evaluates one config; writes config.json, metrics.jsonl, results.json and
  checkpoints to `workdir`; resumes from the last checkpoint when rerun. Returns results.

  `data` may pass a preloaded (train, test) pair (sweeps reuse it across runs). Runs
  under `config.mesh` as the ambient mesh (one device: no mesh).
  """
  validate_config(config)
  cfg_dict = workdir_io.config_to_dict(config)
  with workdir_io.lock(workdir):
    done = workdir_io.finished(workdir, cfg_dict)
    if done is not None:  # a finished run is left untouched
      if verbose:
        workdir_io.log("already finished: %s", os.path.join(workdir, "results.json"))
      return done
    workdir_io.claim(workdir, cfg_dict, overwrite=overwrite, error=ConfigError, check_only=True)
    return _run(config, cfg_dict, workdir, overwrite, data, verbose)


def _run(config, cfg_dict, workdir, overwrite, data, verbose) -> dict:
  log = workdir_io.log if verbose else (lambda *a: None)
  t_data = time.time()
  train, test = data if data is not None else data_lib.load_data(config.data, int(config.seed))
  check_data_fit(config, train.num_users, train.num_items)
  check_splits(config, train, test, log=log if verbose else None)
  log(
      "data: %d users, %d items, %d train / %d test interactions (%.1fs)",
      train.num_users,
      train.num_items,
      len(train.user_ids),
      len(test.user_ids),
      time.time() - t_data,
  )
  # Claimed only now: a run that failed on its config or data leaves no config.json.
  workdir_io.claim(workdir, cfg_dict, overwrite=overwrite, error=ConfigError)

  mesh = sharding.make_mesh(tuple(config.mesh.shape) or None)
  with sharding.mesh_context(mesh):
    if not models.REGISTRY[config.model.name].trained_by_step:
      return wals.run(config, workdir, train, test, verbose)

    spec = StepSpec.from_config(config)
    ddata = step.device_data(train, spec)
    state = step.init_state(spec, config, train.num_users, train.num_items, int(config.seed))
    ckpt = workdir_io.Checkpointer(workdir, int(config.train.checkpoint_every))
    state, start = ckpt.restore(state)
    if mesh is not None:  # tables row-sharded over the devices, the rest replicated
      state, ddata = sharding.place_state(state, mesh), sharding.place_data(ddata, mesh)
    if start:
      log("resumed from the checkpoint at step %d", start)

    mpath = workdir_io.metrics_path(workdir, start)
    t0 = time.time()
    try:
      state, train_seconds, compile_seconds = _train_loop(
          config, spec, state, ddata, start, ckpt, train, test, mpath, log
      )
    except Exception as err:
      full = workdir_io.find_enospc(err)
      if full is None:
        raise
      latest = _latest(ckpt)
      path = full.filename or ckpt.directory
      raise workdir_io.DiskFullError(
          errno.ENOSPC,
          f"no space left on device writing {path} (the disk mounted at "
          f"{_mount_point(workdir)}); "
          f"last good checkpoint: {latest} (in {ckpt.directory}); free space and "
          "rerun to resume",
      ) from None
    t_eval = time.time()
    query_UxD = step.query_embeddings(spec, state, ddata)
    items_NxD = step.item_embeddings(spec, state)
    final = evaluate.evaluate_model(
        query_UxD, items_NxD, train, test, config.eval, temperature=spec.loss.temperature
    )
    eval_seconds = time.time() - t_eval
    if config.eval.save_embeddings:
      workdir_io.save_embeddings(workdir, query_UxD, items_NxD, train)

  steps = int(config.train.steps)
  workdir_io.append_jsonl(mpath, {"step": steps, **final})
  timed = steps - start - 1  # the steps after the first (compiling) one of this process
  results = workdir_io.write_results(
      workdir,
      final,
      {
          "steps": steps,
          "resumed_from_step": start,
          "steps_per_second": timed / train_seconds if timed > 0 and train_seconds > 0 else None,
          "compile_seconds": compile_seconds,
          "train_seconds": train_seconds,
          "eval_seconds": eval_seconds,
          "wall_seconds": time.time() - t0,
          "num_users": train.num_users,
          "num_items": train.num_items,
      },
      cfg_dict,
  )
  log("final: %s", workdir_io.fmt_metrics(final))
  return results


def _mount_point(path: str) -> str:
  path = os.path.realpath(path)
  while not os.path.ismount(path):
    path = os.path.dirname(path)
  return path


def _latest(ckpt):
  try:
    return ckpt.latest_step()
  except Exception:  # noqa: BLE001 - a broken manager must not hide the disk-full message
    return None


def _train_loop(config, spec, state, ddata, start, ckpt, train, test, mpath, log):
  """Steps start..train.steps; a log line (and eval.every an evaluation) every
  train.log_every steps, the only host syncs. -> (state, seconds spent training)."""
  steps, log_every = int(config.train.steps), int(config.train.log_every)
  eval_every = int(config.eval.every)
  train_seconds, compile_seconds, t_log, s_log = 0.0, None, clock(), start
  throttle = sharding.DispatchThrottle()  # <= 8 steps queued (XLA:CPU multi-device hang)
  for done in range(start + 1, steps + 1):
    state, step_metrics = step.jitted_train_step(spec, state, ddata)
    throttle(step_metrics["loss"])
    if done == start + 1:  # the first step compiles: timed apart, not in steps/s
      float(step_metrics["loss"])  # waits for it
      now = clock()
      compile_seconds, t_log, s_log = now - t_log, now, done
    if done % log_every == 0 or done == steps:
      loss = float(step_metrics["loss"])
      bad = int(state.first_bad_step)
      if bad >= 0 and not spec.train.skip_nonfinite:
        raise NonFiniteLossError(
            f"loss became {'NaN' if math.isnan(loss) else 'non-finite'} at step {bad}; "
            f"last good checkpoint: {ckpt.latest_step()} (in {ckpt.directory}); "
            f"set --config.train.skip_nonfinite=True to skip such steps"
        )
      now = clock()
      sps = (done - s_log) / max(now - t_log, 1e-9) if done > s_log else None
      train_seconds += now - t_log
      t_log, s_log = now, done
      row = {"step": done, "loss": loss, "steps_per_second": sps}
      if bad >= 0:
        row["first_skipped_step"] = bad
      if eval_every and done % eval_every == 0 and done != steps:
        row.update(
            evaluate.evaluate_model(
                step.query_embeddings(spec, state, ddata),
                step.item_embeddings(spec, state),
                train,
                test,
                config.eval,
                temperature=spec.loss.temperature,
            )
        )
        t_log = clock()
      workdir_io.append_jsonl(mpath, row)
      log(
          "step %d/%d  loss %.4f  %s steps/s  ETA %s",
          done,
          steps,
          loss,
          "-" if sps is None else f"{sps:.1f}",
          workdir_io.fmt_seconds((steps - done) / max(sps or 0.0, 1e-9)),
      )
    ckpt.maybe_save(done, state, final=(done == steps))
  ckpt.close()
  return state, train_seconds, compile_seconds

"""The run: `train_and_evaluate(config, workdir)` trains one config and evaluates it.

validate -> claim the workdir -> load data -> init or resume -> the jitted step in a loop
(logging, periodic evaluation, checkpoints) -> final evaluation -> results.json.
The pieces: `jaxrec.config` (validation, the step's static spec), `jaxrec.step` (state
and the step), `jaxrec.evaluate`, `jaxrec.workdir` (files), `jaxrec.wals` (the closed-form
model's run).
"""

from __future__ import annotations

import errno
import json
import math
import os
import time

import jax
import ml_collections
import numpy as np

from jaxrec import data as data_lib
from jaxrec import evaluate, host_malloc, models, sharding, step
from jaxrec import workdir as workdir_io
from jaxrec.config import (
    ConfigError,
    StepSpec,
    check_data_fit,
    check_splits,
    data_seed,
    eval_num_users,
    select_metric,
    validate_config,
)

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
    test: bool = True,
) -> dict:
  """Trains and evaluates one config; writes config.json, metrics.jsonl, results.json and
  checkpoints to `workdir`; resumes from the last checkpoint when rerun. Returns results.

  `data` may pass a preloaded (train, test) pair (sweeps reuse it across runs). Runs
  under `config.mesh` as the ambient mesh (one device: no mesh). `test=False` (a tuning
  trial): the test pairs are never evaluated, results.json has empty `metrics` and
  `run.test_evaluated` false; the run needs a validation part.
  """
  validate_config(config)
  cfg_dict = workdir_io.config_to_dict(config)
  with workdir_io.lock(workdir):
    done = workdir_io.finished(workdir, cfg_dict, test=test)
    if done is not None:  # a finished run is left untouched
      if verbose:
        workdir_io.log("already finished: %s", os.path.join(workdir, "results.json"))
      return done
    workdir_io.claim(workdir, cfg_dict, overwrite=overwrite, error=ConfigError, check_only=True)
    return _run(config, cfg_dict, workdir, overwrite, data, verbose, test)


class Heartbeat:
  """The log of a quiet run (`verbose=False`: sweeps and tune): at most one line per
  `every` seconds, none in the run's first `every` seconds, each prefixed by the workdir,
  so a run that trains for hours inside a sweep still shows its step and ETA."""

  def __init__(self, workdir: str, every: float = 60.0, clock=time.monotonic, out=None):
    self.tag, self.every, self.clock = workdir, float(every), clock
    self.out = out or workdir_io.log
    self.next = clock() + self.every

  def __call__(self, fmt, *args):
    now = self.clock()
    if now >= self.next:
      self.next = now + self.every
      self.out("  (%s) " + fmt, self.tag, *args)


def _run(config, cfg_dict, workdir, overwrite, data, verbose, test=True) -> dict:
  log = workdir_io.log if verbose else Heartbeat(workdir)
  t_data = time.time()
  splits = (
      data_lib.as_splits(data)
      if data is not None
      else data_lib.load_data(config.data, data_seed(config))
  )
  train, valid, test_pairs = splits
  if not test and not valid.num_interactions:
    raise ConfigError(
        "a run without its test evaluation needs a validation part (data.valid_fraction)"
    )
  check_data_fit(config, train.num_users, train.num_items)
  check_splits(config, train, log=log if verbose else None)
  valid_users, n_valid_users = None, None  # validation users ranked (eval.num_users)
  if valid.num_interactions:
    everyone = evaluate.check_evaluable(train, valid, "valid")
    valid_users = evaluate.sample_eval_users(
        everyone, eval_num_users(config.eval), int(config.seed)
    )
    n_valid_users = int((everyone if valid_users is None else valid_users).size)
  # Test pairs are read once, by the final evaluation (`_test_metrics`); here only their
  # count, so a split that left no test pairs fails before training.
  if not test_pairs.num_interactions:
    raise data_lib.DataError(
        f"no user to evaluate: the split left no test pairs (data.name={config.data.name}, "
        f"{train.num_interactions} train interactions; users need >= 2 interactions)"
    )
  data_seconds = time.time() - t_data
  log(
      "data: %d users, %d items, %d train / %d valid / %d test interactions (%.1fs)",
      train.num_users,
      train.num_items,
      train.num_interactions,
      valid.num_interactions,
      test_pairs.num_interactions,
      data_seconds,
  )
  # Claimed only now: a run that failed on its config or data leaves no config.json.
  workdir_io.claim(workdir, cfg_dict, overwrite=overwrite, error=ConfigError)

  mesh = sharding.make_mesh(tuple(config.mesh.shape) or None)
  with sharding.mesh_context(mesh):
    if not models.trained_by_step(config.model.name):
      return _run_closed_form(
          config, cfg_dict, workdir, splits, log, valid_users, n_valid_users, test, data_seconds
      )

    spec = StepSpec.from_config(config)
    ddata = step.device_data(train, spec)
    state = step.init_state(spec, config, train.num_users, train.num_items, int(config.seed))
    ckpt = workdir_io.Checkpointer(
        workdir, int(config.train.checkpoint_every), float(config.train.checkpoint_seconds)
    )
    state, start = ckpt.restore(state)
    if mesh is not None:  # tables row-sharded over the devices, the rest replicated
      state, ddata = sharding.place_state(state, mesh), sharding.place_data(ddata, mesh)
    if start:
      log("resumed from the checkpoint at step %d", start)
    jax.block_until_ready(state)  # the init's values are computed here, not timed below
    t_huge = time.time()
    if huge := host_malloc.huge_pages(jax.tree.leaves(state)):
      log("%.2f GB of tables in 2 MiB pages (%.1fs)", huge / 2**30, time.time() - t_huge)

    mpath = workdir_io.metrics_path(workdir, start)
    carried = carried_train_seconds(mpath)  # training time of the runs this one resumes
    selector = Selector(config, workdir, start)
    t0 = time.time()
    try:
      state, last, train_seconds, compile_seconds = _train_loop(
          config,
          spec,
          state,
          ddata,
          start,
          ckpt,
          splits,
          mpath,
          selector,
          log,
          valid_users,
          carried,
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
    items_NxD = step.item_embeddings(spec, state, ddata)
    if valid.num_interactions and selector.latest_step != last:
      valid_last = _valid_metrics(spec, query_UxD, items_NxD, splits, config, valid_users)
      selector.offer(last, query_UxD, items_NxD, valid_last)
      _append_valid(mpath, last, carried + train_seconds, valid_last)
    if config.eval.save_embeddings:
      workdir_io.save_embeddings(workdir, query_UxD, items_NxD, train)
    chosen = selector.best() if config.eval.select else None
    if chosen is not None:
      selected_step, valid_final, query_UxD, items_NxD = chosen
    else:
      selected_step, valid_final = last, selector.latest_metrics
    final = _test_metrics(spec, query_UxD, items_NxD, splits, config) if test else {}
    eval_seconds = time.time() - t_eval

  timed = last - start - 1  # the steps after the first (compiling) one of this process
  facts = {
      "steps": last,
      "resumed_from_step": start,
      "steps_per_second": timed / train_seconds if timed > 0 and train_seconds > 0 else None,
      "compile_seconds": compile_seconds,
      "train_seconds": train_seconds,
      "eval_seconds": eval_seconds,
      "checkpoint_saves": ckpt.saves,  # scheduled ones, inside train_seconds (not the final)
      "wall_seconds": time.time() - t0,
      "data_seconds": data_seconds,
      "eval_num_users": n_valid_users,
      "test_evaluated": test,
  }
  return _finish(workdir, cfg_dict, mpath, splits, final, valid_final, selected_step, facts, log)


def _served(query_UxD, items_NxD, splits, config):
  """The embeddings as ranked: with eval.logp_bias, plus beta log p_j from train counts
  (every metric of the evaluation, test_softmax_loss included, is then of those scores)."""
  beta = float(config.eval.get("logp_bias", 0.0))
  return evaluate.with_logp_bias(query_UxD, items_NxD, splits.train, beta)


def _valid_metrics(spec, query_UxD, items_NxD, splits, config, valid_users) -> dict:
  """A validation evaluation: over `valid_users` (eval.num_users' sample; None: all)."""
  query_UxD, items_NxD = _served(query_UxD, items_NxD, splits, config)
  return evaluate.evaluate_model(
      query_UxD,
      items_NxD,
      splits.train,
      splits.valid,
      config.eval,
      temperature=spec.loss.temperature,
      eval_users=valid_users,
  )


def _test_metrics(spec, query_UxD, items_NxD, splits, config) -> dict:
  """The one read of the test pairs: train and valid pairs masked."""
  known = _known_for_test(splits)
  query_UxD, items_NxD = _served(query_UxD, items_NxD, splits, config)
  return evaluate.evaluate_model(
      query_UxD, items_NxD, known, splits.test, config.eval, temperature=spec.loss.temperature
  )


def _known_for_test(splits):
  """Train + valid pairs (masked by the test evaluation), after checking that some test
  pair lies outside them."""
  known = evaluate.known_pairs(splits.train, splits.valid)
  evaluate.check_evaluable(known, splits.test, "test")
  return known


def _run_closed_form(
    config, cfg_dict, workdir, splits, log, valid_users, n_valid_users, test, data_seconds
) -> dict:
  """A closed-form model (`models.Model.fit`): fit on train, evaluate on valid (if any;
  over `valid_users`, None: all) and test (if `test`). A rerun refits (no checkpoints)."""
  t0 = time.time()
  scorer = models.REGISTRY[config.model.name].fit(config, splits.train)
  train_seconds = time.time() - t0
  mpath = workdir_io.metrics_path(workdir, 0)
  for i, h in enumerate(getattr(scorer, "history", ())):
    workdir_io.append_jsonl(mpath, {"step": i + 1, **{k: float(v) for k, v in h.items()}})
  if config.eval.save_embeddings and hasattr(scorer, "query_UxD"):
    workdir_io.save_embeddings(workdir, scorer.query_UxD, scorer.items_NxD, splits.train)
  t_eval = time.time()
  valid = (
      evaluate.evaluate_scorer(
          scorer, splits.train, splits.valid, config.eval, eval_users=valid_users
      )
      if splits.valid.num_interactions
      else None
  )
  if valid:  # its one point of quality against time: the fit's seconds
    _append_valid(mpath, len(getattr(scorer, "history", ())) or 1, train_seconds, valid)
  final = (
      evaluate.evaluate_scorer(scorer, _known_for_test(splits), splits.test, config.eval)
      if test
      else {}
  )
  steps = len(getattr(scorer, "history", ())) or 1
  facts = {
      "steps": steps,
      "resumed_from_step": 0,
      "steps_per_second": steps / train_seconds if train_seconds > 0 else None,
      "train_seconds": train_seconds,
      "eval_seconds": time.time() - t_eval,
      "wall_seconds": time.time() - t0,
      "data_seconds": data_seconds,
      "eval_num_users": n_valid_users,
      "test_evaluated": test,
  }
  return _finish(workdir, cfg_dict, None, splits, final, valid, steps, facts, log)


def carried_train_seconds(mpath: str) -> float:
  """The `train_seconds` of the last metrics.jsonl row that has one (0.0: none): a
  resumed run continues the time axis of the run it resumes (metrics_path has already
  dropped the rows after its checkpoint; the steps between the last such row and the
  checkpoint are redone, so their time is counted once)."""
  seconds = 0.0
  if os.path.exists(mpath):
    with open(mpath) as f:
      for line in f:
        if line.strip():
          seconds = float(json.loads(line).get("train_seconds", seconds))
  return seconds


def _append_valid(mpath, step_done: int, train_seconds: float, valid: dict) -> None:
  """A metrics.jsonl row of validation metrics (`valid/NAME`) at `train_seconds`."""
  row = {f"valid/{k}": v for k, v in valid.items()}
  workdir_io.append_jsonl(mpath, {"step": step_done, "train_seconds": train_seconds, **row})


def _finish(workdir, cfg_dict, mpath, splits, final, valid, selected_step, facts, log) -> dict:
  """results.json: test metrics, the valid metrics of the selected step, run facts."""
  if mpath is not None and final:
    workdir_io.append_jsonl(mpath, {"step": facts["steps"], **final})
  facts.update(
      num_users=splits.train.num_users,
      num_items=splits.train.num_items,
      selected_step=selected_step,
  )
  results = workdir_io.write_results(workdir, final, facts, cfg_dict, valid=valid)
  if valid:
    log("valid (step %d): %s", selected_step, workdir_io.fmt_metrics(valid))
  if final:
    log("final: %s", workdir_io.fmt_metrics(final))
  return results


class Selector:
  """Model selection on validation (config eval.select, eval.patience): keeps the
  embeddings of the best step by eval.select (greater is better) in workdir/selected.npz,
  so a resumed run still reports the best step seen before it stopped."""

  def __init__(self, config, workdir, start: int):
    self.metric = select_metric(config.eval)
    self.patience = int(config.eval.patience)
    self.path = os.path.join(workdir, "selected.npz")
    self.latest_metrics, self.latest_step = None, None
    self.best_value, self.best_step, self.since_best = -math.inf, None, 0
    if self.metric and start and os.path.exists(self.path):
      with np.load(self.path) as f:
        if int(f["step"]) <= start:
          self.best_value, self.best_step = float(f["value"]), int(f["step"])
    elif os.path.exists(self.path):
      os.remove(self.path)  # a fresh run: nothing selected yet

  def offer(self, step_done: int, query_UxD, items_NxD, valid_metrics: dict) -> None:
    self.latest_metrics, self.latest_step = valid_metrics, step_done
    if not self.metric:
      return
    value = float(valid_metrics[self.metric])
    if value > self.best_value:
      self.best_value, self.best_step, self.since_best = value, step_done, 0
      workdir_io.save_npz_atomic(
          self.path,
          query=np.asarray(query_UxD, np.float32),
          items=np.asarray(items_NxD, np.float32),
          step=step_done,
          value=value,
          metrics=json.dumps(valid_metrics),
      )
    else:
      self.since_best += 1

  @property
  def stop(self) -> bool:
    return bool(self.patience) and self.since_best >= self.patience

  def best(self):
    """(step, valid metrics, query_UxD, items_NxD) of the best step, or None."""
    if self.best_step is None:
      return None
    with np.load(self.path) as f:
      return int(f["step"]), json.loads(str(f["metrics"])), f["query"], f["items"]


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


def _train_loop(
    config, spec, state, ddata, start, ckpt, splits, mpath, selector, log, valid_users, carried
):
  """Steps start..train.steps; a log line every train.log_every steps and a validation
  evaluation (over `valid_users`, None: all) every eval.every steps, the only host syncs;
  stops early when the selector runs out of patience. Each metrics row holds
  `train_seconds`: `carried` (the resumed run's) + this process's training time so far,
  without the first (compiling) step and without evaluations (the x of quality against
  time). Time-based (checked at the log lines): an evaluation at the first log line
  after each eval.every_seconds of train_seconds, and a stop at the first one at or past
  train.max_seconds (the caller evaluates that last step).
  -> (state, last step, this process's seconds training, seconds compiling)."""
  steps, log_every = int(config.train.steps), int(config.train.log_every)
  has_valid = bool(splits.valid.num_interactions)
  eval_every = int(config.eval.every) if has_valid else 0
  eval_seconds = float(config.eval.get("every_seconds", 0.0)) if has_valid else 0.0
  max_seconds = float(config.train.get("max_seconds", 0.0))
  next_eval_at = (math.floor(carried / eval_seconds) + 1) * eval_seconds if eval_seconds else 0
  train_seconds, compile_seconds, t_log, s_log = 0.0, None, clock(), start
  throttle = sharding.DispatchThrottle()  # <= 8 steps queued (XLA:CPU multi-device hang)
  done = start

  def eta(done, sps, elapsed):  # seconds left: the steps at this speed, or the budget
    left = (steps - done) / max(sps or 0.0, 1e-9)
    return min(left, max(max_seconds - elapsed, 0.0)) if max_seconds else left

  if max_seconds and carried >= max_seconds:
    return state, done, train_seconds, compile_seconds  # the budget was spent before
  for done in range(start + 1, steps + 1):
    state, step_metrics = step.jitted_train_step(spec, state, ddata)
    throttle(step_metrics["loss"])
    if done == start + 1:  # the first step compiles: timed apart, not in steps/s
      float(step_metrics["loss"])  # waits for it
      now = clock()
      compile_seconds, t_log, s_log = now - t_log, now, done
    is_eval = eval_every and done % eval_every == 0 and done != steps
    if done % log_every == 0 or done == steps or is_eval:
      loss = float(step_metrics["loss"])
      elapsed = carried + train_seconds + clock() - t_log
      out_of_time = bool(max_seconds) and elapsed >= max_seconds and done != steps
      if eval_seconds and elapsed >= next_eval_at:
        is_eval = bool(is_eval) or (done != steps and not out_of_time)
        next_eval_at = (math.floor(elapsed / eval_seconds) + 1) * eval_seconds
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
      row = {
          "step": done,
          "loss": loss,
          "steps_per_second": sps,
          "train_seconds": carried + train_seconds,
      }
      if bad >= 0:
        row["first_skipped_step"] = bad
      if is_eval:
        query_UxD = step.query_embeddings(spec, state, ddata)
        items_NxD = step.item_embeddings(spec, state, ddata)
        valid = _valid_metrics(spec, query_UxD, items_NxD, splits, config, valid_users)
        selector.offer(done, query_UxD, items_NxD, valid)
        row.update({f"valid/{k}": v for k, v in valid.items()})
        t_log = clock()
      workdir_io.append_jsonl(mpath, row)
      log(
          "step %d/%d  loss %.4f  %s steps/s  ETA %s%s",
          done,
          steps,
          loss,
          "-" if sps is None else f"{sps:.1f}",
          workdir_io.fmt_seconds(eta(done, sps, elapsed)),
          f"  valid {selector.metric or 'recall'} {row.get('valid/' + (selector.metric or ''), '')}"
          if is_eval and selector.metric
          else "",
      )
      if is_eval and selector.stop:
        log(
            "early stop at step %d: no better %s in %d evaluations",
            done,
            config.eval.select,
            selector.patience,
        )
        ckpt.maybe_save(done, state, final=True)
        break
      if out_of_time:
        log("stop at step %d: %.1f s of training, train.max_seconds=%g", done, elapsed, max_seconds)
        ckpt.maybe_save(done, state, final=True)
        break
    ckpt.maybe_save(done, state, final=(done == steps))
  ckpt.close()
  return state, done, train_seconds, compile_seconds

"""The run's workdir: checkpoints, atomic JSON/JSONL writes, run facts and results.

Layout: config.json (the resolved config), metrics.jsonl (one line per log step),
results.json (final metrics, run facts, config), checkpoints/ (orbax, async),
embeddings.npz (optional). Every file is written atomically (temp file + rename) by
process 0; a rerun of the same config resumes from the last checkpoint.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import inspect
import json
import os
import platform as _platform
import re
import shutil
import subprocess
import time

import jax
import numpy as np
import optax
from absl import logging


class WorkdirBusyError(RuntimeError):
  """Another live process holds the workdir's lock."""


class DiskFullError(OSError):
  """No space left while writing a run's files; names the path and the last checkpoint."""


class CheckpointLayoutError(ValueError):
  """A checkpoint holds a train state of another layout (another jaxrec's, e.g. the kernel
  tree before 5871b82): not damage, so it is neither set aside nor silently replaced."""


@contextlib.contextmanager
def lock(workdir: str):
  """An exclusive flock on WORKDIR/.lock (holding our pid) for the `with` body. The OS
  drops it when the process dies, so a killed run never leaves a stale lock. A second
  holder is refused at once with WorkdirBusyError naming the first one's pid."""
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, ".lock")
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
      raise WorkdirBusyError(
          f"workdir {workdir} is in use by another run (pid {holder}); wait for it or use "
          "another --workdir"
      ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    yield
  finally:
    os.close(fd)  # releases the lock (the file stays: removing it would race a waiter)


def find_enospc(err: BaseException):
  """The ENOSPC error in `err` or its causes/contexts, or None: an OSError ENOSPC, or
  tensorstore's (orbax's writer) ValueError "RESOURCE_EXHAUSTED ... No space left on
  device [os_error_code='28']" (returned as an OSError naming no file)."""
  seen = set()
  while err is not None and id(err) not in seen:
    seen.add(id(err))
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
      return err
    if "No space left on device" in str(err) or "os_error_code='28'" in str(err):
      return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    err = err.__cause__ or err.__context__
  return None


def _positive_correction_is_noop(cfg: dict, value) -> bool:
  """sampler.correct_positive changes nothing unless log-Q is on and the sampler gives the
  positive a log q (in_batch, mixed) and the run draws negatives at all (a loss that
  needs them, a model trained by step); there, runs recorded before the key did not
  correct the positive, i.e. False."""
  from jaxrec import losses, models, samplers  # pylint: disable=import-outside-toplevel

  model = models.REGISTRY.get(cfg.get("model", {}).get("name"))
  loss = losses.REGISTRY.get(cfg.get("loss", {}).get("name"))
  if model is not None and model.fit is not None or loss is not None and not loss.needs_negatives:
    return True
  sampler = cfg.get("sampler", {})
  entry = samplers.REGISTRY.get(sampler.get("name"))
  if entry is None or entry.pos_log_q is None or not sampler.get("logq", True):
    return True
  return value is False


# Config keys added after runs were recorded without them, each with the value that acts
# as its absence (or a predicate (cfg, value) -> "acts as absent"): matching a workdir's
# config.json (a finished run, a resumed run, a sweep's record in records/) treats
# "absent" and "no-op" alike.
KEYS_ADDED_LATER = {
    "eval.num_users": 0,
    "sampler.kernel_alpha": 100.0,
    "sampler.kernel_leaf": 128,
    "sampler.cache_refresh": 0.1,
    "data.user_features": "",
    "data.user_feature_types": "",
    "data.item_features": "",
    "data.item_feature_types": "",
    "sampler.correct_positive": _positive_correction_is_noop,
    "eval.logp_bias": 0.0,
    "eval.every_seconds": 0.0,
    "train.max_seconds": 0.0,
}


# Keys that say when a run saves, not what it computes (a resumed run replays the same
# batches): two configs differing only in them are the same run.
SCHEDULE_KEYS = ("train.checkpoint_every", "train.checkpoint_seconds")


def comparable(cfg_dict: dict) -> dict:
  """`cfg_dict` less the SCHEDULE_KEYS and the KEYS_ADDED_LATER that hold a no-op value
  (a copy)."""
  out = json.loads(json.dumps(cfg_dict))
  noops = {**dict.fromkeys(SCHEDULE_KEYS, lambda cfg, value: True), **KEYS_ADDED_LATER}
  for dotted, noop in noops.items():
    *path, last = dotted.split(".")
    section = out
    for key in path:
      section = section.get(key) if isinstance(section, dict) else None
    if not isinstance(section, dict) or last not in section:
      continue
    value = section[last]
    if noop(out, value) if callable(noop) else value == noop:
      del section[last]
  return out


def same_config(a: dict, b: dict) -> bool:
  """Whether two config dicts describe the same run (see SCHEDULE_KEYS, KEYS_ADDED_LATER)."""
  return comparable(a) == comparable(b)


def finished(workdir: str, cfg_dict: dict, *, test: bool = True) -> dict | None:
  """The results of a finished run of this same config in `workdir`, else None; with
  `test`, only of a run that evaluated its test pairs (not a tuning trial's)."""
  try:
    with open(os.path.join(workdir, "config.json")) as f:
      if not same_config(json.load(f), cfg_dict):
        return None
    with open(os.path.join(workdir, "results.json")) as f:
      results = json.load(f)
  except (OSError, json.JSONDecodeError):
    return None
  if test and not results.get("run", {}).get("test_evaluated", True):
    return None
  return results


def write_json_atomic(path: str, obj) -> None:
  """json.dump to a temp file, fsync, rename over `path`."""
  tmp = f"{path}.tmp.{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=2, sort_keys=True, default=_json_default)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def append_jsonl(path: str, row: dict) -> None:
  """One JSON line appended (process 0 only: several hosts, one writer)."""
  if jax.process_index() != 0:
    return
  with open(path, "a") as f:
    f.write(json.dumps(row, sort_keys=True, default=_json_default) + "\n")
    f.flush()


def _json_default(x):
  if isinstance(x, (np.integer,)):
    return int(x)
  if isinstance(x, (np.floating,)):
    return float(x)
  if isinstance(x, (np.ndarray, tuple)):
    return list(x)
  raise TypeError(f"not JSON serialisable: {type(x)}")


def config_to_dict(config) -> dict:
  """A ConfigDict as plain JSON types (what config.json holds)."""
  return json.loads(config.to_json_best_effort(sort_keys=True))


def config_diff(old: dict, new: dict, prefix: str = ""):
  """Dotted keys whose values differ between two nested dicts (generator)."""
  keys = set(old) | set(new) if isinstance(old, dict) and isinstance(new, dict) else set()
  for k in keys:
    p = f"{prefix}{k}"
    if isinstance(old.get(k), dict) and isinstance(new.get(k), dict):
      yield from config_diff(old[k], new[k], p + ".")
    elif old.get(k) != new.get(k):
      yield p


def claim(
    workdir: str, cfg_dict: dict, *, overwrite: bool, error=ValueError, check_only=False
) -> None:
  """Writes config.json into `workdir`. A workdir holding another config raises `error`
  naming the differing keys, or with `overwrite` is cleared of that run's outputs.
  `check_only`: only the refusal (a run claims its workdir once its data passed)."""
  os.makedirs(workdir, exist_ok=True)
  cfg_path = os.path.join(workdir, "config.json")
  if os.path.exists(cfg_path):
    with open(cfg_path) as f:
      old = json.load(f)
    if not same_config(old, cfg_dict):
      if not overwrite:
        diff = sorted(config_diff(comparable(old), comparable(cfg_dict)))
        raise error(
            f"workdir {workdir} holds a run of a different config (differs in "
            f"{', '.join(diff[:5])}); use another --workdir or pass --overwrite"
        )
      if check_only:
        return
      clear(workdir)
  if check_only:
    return
  write_json_atomic(cfg_path, cfg_dict)


def clear(workdir: str) -> None:
  """Removes a previous run's metrics, results and checkpoints."""
  for name in ("metrics.jsonl", "results.json"):
    p = os.path.join(workdir, name)
    if os.path.exists(p):
      os.remove(p)
  shutil.rmtree(os.path.join(workdir, "checkpoints"), ignore_errors=True)


def metrics_path(workdir: str, resume_step: int) -> str:
  """workdir/metrics.jsonl, holding only the lines of steps <= resume_step (a fresh run,
  resume_step 0, starts an empty file; a resumed one drops the steps it will redo)."""
  path = os.path.join(workdir, "metrics.jsonl")
  if resume_step == 0 and os.path.exists(path):
    os.remove(path)
  truncate_metrics(path, resume_step)
  return path


def truncate_metrics(path: str, step: int) -> None:
  """On resume, drop log lines from steps after the checkpoint (they will be redone)."""
  if not os.path.exists(path):
    return
  with open(path) as f:
    rows = [line for line in f if line.strip()]
  keep = []
  for line in rows:
    try:
      if json.loads(line).get("step", 0) <= step:
        keep.append(line)
    except json.JSONDecodeError:  # a torn last line from a killed run
      pass
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.writelines(keep)
  os.replace(tmp, path)


def run_facts() -> dict:
  """Platform, devices, host, git commit and library versions of this run."""
  import flax
  import jaxlib

  try:
    commit = (
        subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            cwd=os.path.dirname(os.path.abspath(__file__)),
            timeout=5,
        ).stdout.strip()
        or None
    )
  except (OSError, subprocess.SubprocessError):
    commit = None
  return {
      "platform": jax.default_backend(),
      "device_count": jax.device_count(),
      "device_kind": jax.devices()[0].device_kind,
      "host": _platform.node(),
      "git_commit": commit,
      "versions": {
          "jax": jax.__version__,
          "jaxlib": jaxlib.__version__,
          "flax": flax.__version__,
          "optax": optax.__version__,
          "numpy": np.__version__,
          "python": _platform.python_version(),
      },
  }


def write_results(workdir: str, metrics: dict, run: dict, cfg_dict: dict, *, valid=None) -> dict:
  """results.json = {"metrics" (test), "valid" (the selected step's validation metrics,
  {} without a validation part), "run": run facts + `run`, "config"}; returns it."""
  results = {
      "metrics": metrics,
      "valid": valid or {},
      "run": {**run_facts(), **run},
      "config": cfg_dict,
  }
  write_json_atomic(os.path.join(workdir, "results.json"), results)
  return results


def save_npz_atomic(path: str, **arrays) -> None:
  """np.savez to a temp file, then rename over `path`."""
  with open(path + ".tmp", "wb") as f:
    np.savez(f, **arrays)
  os.replace(path + ".tmp", path)


def save_embeddings(workdir, query_UxD, items_NxD, train) -> None:
  """embeddings.npz: query/item embeddings and group labels (for the PCA picture)."""

  def groups(g, n):
    return np.asarray(g) if g is not None else np.zeros(n, np.int32)

  path = os.path.join(workdir, "embeddings.npz")
  with open(path + ".tmp", "wb") as f:
    np.savez(
        f,
        query=np.asarray(query_UxD, np.float32),
        items=np.asarray(items_NxD, np.float32),
        user_groups=groups(train.user_groups, train.num_users),
        item_groups=groups(train.item_groups, train.num_items),
    )
  os.replace(path + ".tmp", path)


def log(fmt, *args) -> None:
  """Progress lines go to stdout (library logging stays quiet: orbax logs every file)."""
  print(fmt % args if args else fmt, flush=True)


def fmt_seconds(s) -> str:
  s = int(s)
  return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def fmt_metrics(m) -> str:
  return "  ".join(f"{k} {v:.4f}" for k, v in sorted(m.items()) if isinstance(v, float))


def numpy_handler(ocp):
  """orbax's handler for host (numpy) arrays, told not to copy them again before an async
  write where this orbax has that option (`deepcopy_host_arrays`; not in every release:
  the GPU machine's orbax lacks it). Without it orbax's own default applies; either way is
  safe, since the saved host buffers are ours and untouched until the write finishes."""
  handler = ocp.type_handlers.NumpyHandler
  if "deepcopy_host_arrays" in inspect.signature(handler.__init__).parameters:
    return handler(deepcopy_host_arrays=False)
  return handler()


class Checkpointer:
  """Orbax checkpoints under workdir/checkpoints, written asynchronously (the step goes on
  while orbax writes), every `every` steps and/or every `seconds` of wall time since the
  last save (0: that schedule off; both 0: no checkpoints). Orbax writes each step into a
  temporary folder and renames it when complete, so a torn (killed) save is never picked
  up; an unreadable checkpoint is set aside and an older one tried.

  A save costs the loop one memcpy of the state into host buffers kept between saves
  (`_snapshot`); orbax writes those, uncompressed, in the background, and the state stays
  free to be donated to the next step. (Handing orbax the state itself, as before, made
  the step after a save copy every table, since orbax's zero-copy host view kept it from
  being donated; compression and fresh buffers each cost more CPU.) The write itself still
  takes about a second of the 2 cores per 512 MB (page cache, kernel writeback), which is
  why the launcher's default schedule is by time (benchmarks/loop_throughput.py; RESULTS).
  The buffers hold one copy of the state while checkpoints are on: the copy orbax made at
  each save before, kept."""

  def __init__(self, workdir: str, every: int, seconds: float = 0.0, clock=time.monotonic):
    self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    self.every, self.seconds, self._clock = int(every), float(seconds), clock
    self._last_save = clock()
    self.saves = 0  # scheduled saves so far (not the final one)
    self._mngr = None
    self._host = {}  # leaf index -> host buffer of the last save (reused)
    # Temporary folders of saves cut short (kill, full disk): never restorable, removed
    # (the caller holds the workdir lock, so no save of another process is running).
    for tmp in glob.glob(os.path.join(glob.escape(self.directory), "*.orbax-checkpoint-tmp*")):
      shutil.rmtree(tmp, ignore_errors=True)
    if self.every or self.seconds:
      import orbax.checkpoint as ocp

      self._ocp = ocp
      self._mngr = ocp.CheckpointManager(
          self.directory,
          options=ocp.CheckpointManagerOptions(
              max_to_keep=2, create=True, enable_async_checkpointing=True
          ),
          # Uncompressed: zstd over float tables saves little and its CPU competes with
          # the step while the async write runs. Host arrays are not copied again (the
          # buffers are ours and untouched until the write is finished).
          item_handlers=ocp.PyTreeCheckpointHandler(
              use_compression=False,
              type_handler_registry=ocp.type_handlers.create_type_handler_registry(
                  (int, ocp.type_handlers.ScalarHandler()),
                  (float, ocp.type_handlers.ScalarHandler()),
                  (np.number, ocp.type_handlers.ScalarHandler()),
                  (np.ndarray, numpy_handler(ocp)),
                  (jax.Array, ocp.type_handlers.ArrayHandler()),
              ),
          ),
      )

  def latest_step(self):
    return self._mngr.latest_step() if self._mngr else None

  def restore(self, state):
    """-> (state, step): the latest readable checkpoint, or (state, 0)."""
    if not self._mngr:
      return state, 0
    for step in sorted(self._mngr.all_steps(), reverse=True):
      try:
        restored = self._mngr.restore(
            step,
            args=self._ocp.args.PyTreeRestore(
                item=state, restore_args=self._ocp.checkpoint_utils.construct_restore_args(state)
            ),
        )
        return type(state)(*restored) if isinstance(restored, (list, tuple)) else restored, step
      except Exception as err:
        if "structures do not match" in str(err):  # orbax: the saved pytree differs
          keys = re.findall(r"^(\S+):$", str(err), flags=re.M)
          raise CheckpointLayoutError(
              f"checkpoint at step {step} in {self.directory} holds a train state of another "
              f"layout (written by another jaxrec version?; differs in {', '.join(keys[:4])}); "
              "use another --workdir, or move its checkpoints/ away to start over"
          ) from None
        # a damaged checkpoint: set it aside, try the previous one
        aside = os.path.join(self.directory, f"{step}.unreadable-{int(time.time())}")
        os.replace(os.path.join(self.directory, str(step)), aside)
        self._mngr.reload()
        logging.warning(
            "checkpoint at step %d is unreadable (%s); moved to %s, trying an " "older one",
            step,
            err,
            aside,
        )
    return state, 0

  def due(self, step: int) -> bool:
    """Whether `step` is a scheduled save (by steps, or by time since the last save)."""
    by_steps = self.every and step % self.every == 0
    return bool(by_steps or self.seconds and self._clock() - self._last_save >= self.seconds)

  def _snapshot(self, state):
    """`state` with each jax array this process holds whole copied into its host buffer
    (after the previous write has finished with the buffers)."""
    self._mngr.wait_until_finished()
    leaves, treedef = jax.tree.flatten(state)
    out = []
    for i, x in enumerate(leaves):
      if isinstance(x, jax.Array) and x.is_fully_addressable:
        buf = self._host.get(i)
        if buf is None or buf.shape != x.shape or buf.dtype != x.dtype:
          buf = self._host[i] = np.empty(x.shape, x.dtype)
        np.copyto(buf, np.asarray(x))  # waits for x; no reference to x is kept
        x = buf
      out.append(x)
    return jax.tree.unflatten(treedef, out)

  def maybe_save(self, step, state, final=False):
    if self._mngr and (final or self.due(step)):
      snapshot = self._snapshot(state)
      self._mngr.save(step, args=self._ocp.args.PyTreeSave(snapshot), force=True)
      self._last_save = self._clock()
      self.saves += not final

  def close(self):
    if self._mngr:
      self._mngr.wait_until_finished()
      self._mngr.close()
    self._host = {}

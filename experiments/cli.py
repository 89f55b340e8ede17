"""The tools' one user-facing error path (experiments.main, sweep, report, folding).

`cli.run(main, extra_help=...)` is `absl.app.run` that ends every expected failure (a bad
config value or key, bad data, a busy/unwritable/full workdir, Ctrl-C) in at most two
lines on stderr naming the cause, exit 2 (130 for Ctrl-C); --debug or JAXREC_DEBUG=1
shows the traceback instead. Unexpected exceptions keep theirs. --help exits 0.
"""

from __future__ import annotations

import logging as std_logging
import os
import sys
from typing import Callable

from absl import app, flags, logging

from jaxrec import workdir as workdir_io
from jaxrec.config import ConfigError
from jaxrec.data import DataError

flags.DEFINE_bool("debug", False, "Show the traceback of an expected error (or JAXREC_DEBUG=1).")

USAGE, INTERRUPTED = 2, 130
EXPECTED = (
    ConfigError,
    DataError,
    workdir_io.WorkdirBusyError,
    workdir_io.CheckpointLayoutError,
    OSError,
)


def debug() -> bool:
  if os.environ.get("JAXREC_DEBUG", "") not in ("", "0"):
    return True
  fl = flags.FLAGS
  if fl.is_parsed():
    return bool(fl.debug)
  return any(a in ("--debug", "--debug=true", "--debug=True") for a in sys.argv)


def message(err: BaseException) -> str:
  """One line (two at most) naming the cause, no chained internals."""
  if isinstance(err, KeyboardInterrupt):
    return "interrupted (Ctrl-C); rerun the same command to resume from the last checkpoint"
  if isinstance(err, OSError) and not isinstance(err, DataError):
    full = workdir_io.find_enospc(err)
    what = err.strerror or str(err)
    path = err.filename or (full.filename if full is not None and full is not err else None)
    return f"error: {what}: {path}" if path else f"error: {what}"
  if isinstance(err, KeyError) and err.args:
    return f"error: {err.args[0]}"
  text = str(err).strip() or type(err).__name__
  lines = text.splitlines()
  return "error: " + "\n".join(lines[:2])


def _fail(err: BaseException, code: int):
  if debug():
    raise err
  if isinstance(err, workdir_io.DiskFullError):
    # orbax's writer threads fail on and print "Event loop is closed" tracebacks from
    # C++, past Python's hooks, even while we write. So stdout and stderr first point at
    # /dev/null (nothing of theirs lands after our line), then our line goes to the saved
    # stderr in one write (atomic on a pipe below PIPE_BUF) on a line of its own, and we
    # leave without the interpreter's teardown (files are written atomically; nothing of
    # ours is pending).
    sys.stdout.flush()
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.dup2(null, 2)
    os.write(saved, ("\n" + message(err) + "\n").encode())
    os._exit(code)
  print(message(err), file=sys.stderr, flush=True)
  sys.exit(code)


def guarded(main: Callable) -> Callable:
  """main -> main whose expected failures end in one or two lines and a non-zero exit."""

  def wrapped(argv):
    logging.set_verbosity(logging.WARNING)  # orbax logs every file at INFO
    if not debug():  # and its background threads' failures, which we report in one line
      logging.get_absl_handler().addFilter(_NotOrbax())
    try:
      return main(argv)
    except KeyboardInterrupt as err:
      _fail(err, INTERRUPTED)
    except EXPECTED as err:
      if isinstance(err, OSError) and not _user_facing_oserror(err):
        raise
      _fail(err, USAGE)

  return wrapped


class _NotOrbax(std_logging.Filter):

  def filter(self, record) -> bool:
    return "/orbax/" not in record.pathname.replace(os.sep, "/")


def _user_facing_oserror(err: OSError) -> bool:
  """OSErrors a user causes (paths, permissions, a full disk), not internal ones."""
  return (
      isinstance(err, (DataError, workdir_io.DiskFullError))
      or err.filename is not None
      or workdir_io.find_enospc(err) is not None
  )


def _parser(extra_help: Callable[[], str] | None):
  def parse(argv):
    if any(a in ("-h", "--help", "-help", "--helpshort", "-?") for a in argv[1:]):
      fl = flags.FLAGS
      # the flags of the main module and of the one defining --workdir (folding's: sweep)
      mods = [sys.argv[0], fl.find_module_defining_flag("workdir")]
      print("\n".join(fl.module_help(m) for m in dict.fromkeys(m for m in mods if m)))
      if extra_help is not None:
        print(extra_help())
      sys.exit(0)
    try:
      return flags.FLAGS(argv)
    except KeyboardInterrupt as err:
      _fail(err, INTERRUPTED)
    except (flags.Error, KeyError, AttributeError, ConfigError) as err:
      # a bad flag, an unknown config key (--config.train.stepz=5), a bad value
      _fail(_unwrap(err), USAGE)

  return parse


def _unwrap(err: BaseException) -> BaseException:
  """The innermost KeyError of a config-flag parse (ml_collections wraps it twice)."""
  inner = err
  while inner.__cause__ is not None or inner.__context__ is not None:
    inner = inner.__cause__ or inner.__context__
  if isinstance(inner, (KeyError, AttributeError)):
    text = str(inner.args[0] if inner.args else inner).replace("\\'", "'").replace("\\n", "\n")
    first, *rest = text.strip("'\"").splitlines() or [""]
    name = first.strip("'\"")
    given = [
        a[2:].split("=")[0]
        for a in sys.argv[1:]
        if a.startswith("--config.") and name in a.split("=")[0].split(".")
    ]
    hint = f" ({rest[0].strip()})" if rest else ""
    return ConfigError(f"unknown config key {given[0] if given else name!r}{hint}")
  return err


def define_config_file(name: str, default, help_string: str, **kw):
  """config_flags.DEFINE_config_file, whose overrides (read from sys.argv as it is
  defined) end an unknown key or a bad value in one line, exit 2."""
  from ml_collections import config_flags

  try:
    return config_flags.DEFINE_config_file(name, default, help_string, **kw)
  except KeyboardInterrupt as err:
    _fail(err, INTERRUPTED)
  except (flags.Error, KeyError, AttributeError, ValueError, TypeError) as err:
    _fail(_unwrap(err), USAGE)


def run(main: Callable, extra_help: Callable[[], str] | None = None) -> None:
  """absl.app.run(main) with the error path above and --help that exits 0."""
  app.run(guarded(main), flags_parser=_parser(extra_help))

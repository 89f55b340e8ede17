"""The tree is formatted (pyink, 2-space indent as Flax) and lint-clean (ruff): CI runs both."""

import os
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tool(name):
  """The tool from the test environment (installed by the `test` extra)."""
  path = os.path.join(os.path.dirname(sys.executable), name)
  return path if os.path.exists(path) else shutil.which(name)


@pytest.mark.parametrize(
    "cmd", [["pyink", "--check", "--quiet", "."], ["ruff", "check", "--quiet", "."]]
)
def test_tree_passes(cmd):
  exe = _tool(cmd[0])
  assert exe, f"{cmd[0]} is not installed: pip install -e '.[test]'"
  proc = subprocess.run([exe, *cmd[1:]], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}{proc.stderr}"

"""A benchmark variant run in a child process of its own, and the result it prints."""

from __future__ import annotations

import json
import subprocess
import sys


def run(module: str, *args: str) -> dict:
  """`python -m module args...` -> the JSON of the first line it prints that starts with
  "RESULT ", or {"error": the last line of its stderr} where it prints none."""
  r = subprocess.run(
      [sys.executable, "-m", module, *args], capture_output=True, text=True, check=False
  )
  for line in r.stdout.splitlines():
    if line.startswith("RESULT "):
      return json.loads(line[len("RESULT ") :])
  tail = (r.stderr.strip().splitlines() or ["(no output)"])[-1]
  return {"error": tail[:200]}

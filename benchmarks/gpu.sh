#!/usr/bin/env bash
# Runs benchmarks/scaling.py parts (a)-(c) on an NVIDIA GPU and writes one JSON of results:
#   (a) sampled-softmax step time vs catalogue size (10k, 1M, 10M), sparse updates;
#   (b) chunked full softmax GFLOP/s as a fraction of a square matmul (chunks 2048..32768);
#   (c) exact top-100 over 1M items for 10k queries;
# then benchmarks.end_to_end, benchmarks.kernel_sampler_scaling and (with torch)
# benchmarks.peers, their tables in text files.
#
# On a fresh machine with an NVIDIA driver (from the repository root):
#   python3 -m pip install -e . "jax[cuda12]"     # "jax[cuda13]" for a CUDA 13 driver
#   bash benchmarks/gpu.sh [OUT.json]              # default OUT: gpu_results.json
# Environment: PYTHON (default python3); EXTRA_ARGS, more flags for benchmarks.scaling
# (e.g. EXTRA_ARGS="--sizes=10000,1000000 --repeats=3").
# Exits non-zero, saying why, when there is no NVIDIA GPU or JAX does not use it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${1:-gpu_results.json}

if ! command -v nvidia-smi >/dev/null 2>&1; then
  echo "gpu.sh: nvidia-smi not found: this machine has no NVIDIA driver/GPU" >&2
  exit 1
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

"$PY" - <<'EOF'
import sys
try:
  import jax
except ImportError as err:
  sys.exit(f"gpu.sh: cannot import jax ({err}); install: pip install -e . 'jax[cuda12]'")
backend = jax.default_backend()
if backend != "gpu":
  sys.exit(f"gpu.sh: JAX's default backend is {backend!r}, not 'gpu' (devices "
           f"{jax.devices()}); install a CUDA build: pip install 'jax[cuda12]'")
try:
  import jaxrec.losses, jaxrec.metrics, jaxrec.tables  # noqa: F401  (what (a)-(c) import)
except ImportError as err:
  sys.exit(f"gpu.sh: cannot import jaxrec ({err}); run from the repository after "
           "pip install -e .")
print(f"gpu.sh: jax {jax.__version__} on {jax.devices()}", flush=True)
EOF

export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# Each part runs in its own subprocess; let each take GPU memory as it needs it.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
# shellcheck disable=SC2086  # EXTRA_ARGS is a list of flags
"$PY" -m benchmarks.scaling --parts=a,b,c --fs_chunks=2048,8192,32768 \
    --json_out="$OUT" ${EXTRA_ARGS:-}
"$PY" - "$OUT" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
for part in ("a", "b", "c"):
  facts = r[part].get("facts", {})
  if facts.get("platform") != "gpu":
    sys.exit(f"gpu.sh: part {part} ran on {facts.get('platform')!r}, not the GPU")
print(f"gpu.sh: wrote {sys.argv[1]} ({r['a']['facts']['device_kind']})")
EOF

# The end-to-end table (launcher at 10k / 1M / 10M items) and, where torch is installed
# (pip install -e '.[peers]'), the side-by-side table against PyTorch; their printed
# tables go beside the JSON.
"$PY" -m benchmarks.end_to_end | tee "${OUT%.json}_end_to_end.txt"
"$PY" -m benchmarks.kernel_sampler_scaling --repeats=5 | tee "${OUT%.json}_kernel.txt"
if "$PY" -c "import torch" 2>/dev/null; then
  "$PY" -m benchmarks.peers | tee "${OUT%.json}_peers.txt"
else
  echo "gpu.sh: torch not installed: benchmarks.peers skipped (pip install -e '.[peers]')"
fi

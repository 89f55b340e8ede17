# One device call: (1) the Gowalla full-softmax tune (the row docs/RESULTS.md lacks), (2) the
# end-to-end benchmark, (3) the peers benchmark, each under its own timeout; results -> $OUT.
set -o pipefail
T0=$(date +%s)
left() { echo $(( $1 - ($(date +%s) - T0) )); }
source records/gpu_h200/device_setup.sh  # .devrun/setup.sh in the run
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; nproc; lscpu | grep "Model name";
  python3 -c "import jax, flax, optax, ml_collections, torch; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, 'torch', torch.__version__, jax.devices())"; } 2>&1 | tee $OUT/versions.txt
python3 -c "import jax; assert jax.default_backend() == 'gpu'" || exit 3
echo "== gowalla full softmax tune (left $(left 420) s)"
timeout $(left 420) python3 -m experiments.tune --config=experiments/configs/gowalla.py:tune \
  "--config.tune.only=full softmax" --workdir=runs/gw_full_gpu 2>&1 | tee $OUT/gw_full_gpu.log | grep -v "^I[0-9]" | tail -40
echo "gowalla rc=$? at $(( $(date +%s) - T0 )) s"
tar czf $OUT/gw_full_gpu.tgz --exclude=checkpoints --exclude='*.npz' --exclude='.lock' runs/gw_full_gpu
echo "== end_to_end (left $(left 540) s)"
timeout $(left 540) python3 -m benchmarks.end_to_end --timeout=100 2>&1 | tee $OUT/end_to_end.txt | grep -v "^I[0-9]" | tail -30
echo "end_to_end rc=$? at $(( $(date +%s) - T0 )) s"
L=$(left 585)
if [ "$L" -gt 30 ]; then timeout $L python3 -m benchmarks.peers 2>&1 | tee $OUT/peers.txt | tail -30; fi
echo "done at $(( $(date +%s) - T0 )) s"

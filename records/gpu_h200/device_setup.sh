# sourced by the device scripts: carried wheels, the data path the configs expect, env
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 JAX_DEFAULT_MATMUL_PRECISION=highest
mkdir -p ../shared/data && ln -sfn "$PWD/.gowalla" ../shared/data/gowalla

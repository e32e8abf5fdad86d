#!/usr/bin/env bash
# The GPU checks of one device session, in one go (a few minutes):
#   bash bench/device_check.sh OUT_DIR [PYTHON]
# With TensorFlow and roadnet installed for PYTHON (default .venv/bin/python):
# 1. the machine: GPUs TensorFlow sees, CPU bfloat16 flags;
# 2. bench/bench_precision.py: the raw model's forward pass and training steps of roadnet-lite
#    and the full variant in float32 and mixed_float16, then `roadnet run` of a rendered
#    2048 x 2048 scene with mixed_precision off and on (memory growth is always on), and
#    how far the codes move;
# 3. bench/bench_tta.py: `roadnet run` of the same scene with 1 and 4 views per block on one
#    worker (on a GPU the four views are one batch of the model).
# Figures go to OUT_DIR/precision.json, OUT_DIR/tta.jsonl and OUT_DIR/log.txt (for BENCHMARKS.md).
#
# Without TensorFlow (the lent GPU machines' image: Python 3.12 with PyTorch and JAX, no
# package index), only the raw model part runs, on Keras' JAX and PyTorch backends, from
# the wheels `bash bench/device_wheels.sh` put in .device-wheels (carry that folder):
# OUT_DIR/precision-jax.json and OUT_DIR/precision-torch.json. `roadnet run` needs
# TensorFlow, rasterio and dask, which do not fit the 64 MiB a device call carries.
set -uo pipefail
out=${1:?give an output directory}
py=${2:-.venv/bin/python}
mkdir -p "$out"
exec > >(tee "$out/log.txt") 2>&1

keras_backends() {
    local wheels=.device-wheels site=/tmp/roadnet-device/site src=/tmp/roadnet-device/src
    if ! ls "$wheels"/keras-*.whl >/dev/null 2>&1; then
        echo "device_check: no TensorFlow here and no $wheels: run bench/device_wheels.sh and carry it"
        exit 3
    fi
    command -v nvidia-smi >/dev/null && nvidia-smi -L
    rm -rf /tmp/roadnet-device
    python3 -m pip install --quiet --no-index --no-deps --target "$site" "$wheels"/*.whl || exit 3
    # the installed layout (roadnet.model is model/, roadnet.pipeline is pipeline/), as links
    mkdir -p "$src/roadnet"
    for f in roadnet/*.py roadnet/py.typed; do ln -s "$PWD/$f" "$src/roadnet/"; done
    for d in pipeline model configs; do ln -s "$PWD/$d" "$src/roadnet/$d"; done
    # JAX compiles eight step functions (2 variants x 2 precisions x forward / train) first
    for run in jax:360 torch:200; do
        backend=${run%:*}
        echo "== Keras backend $backend"
        PYTHONPATH="$src:$site" KERAS_BACKEND=$backend timeout "${run#*:}" python3 \
            bench/bench_precision.py --variants roadnet-lite,roadnet \
            --precisions float32,mixed_float16 --reps 2 --json "$out/precision-$backend.json"
    done
}

if ! "$py" -c "import tensorflow, roadnet" 2>/dev/null; then
    echo "device_check: $py has no tensorflow or no roadnet here: the model part only"
    keras_backends
    exit 0
fi
"$py" - <<'PY'
import tensorflow as tf
from roadnet.model.precision import cpu_has_bfloat16
print("gpus:", tf.config.list_physical_devices("GPU"), "cpu bfloat16:", cpu_has_bfloat16())
PY
scene="$out/scene"
"$py" -m roadnet.pipeline.cli synth --osm test --gsd 0.3 --size 2048x2048 --seed 7 --out "$scene"
gpu=$("$py" -c "import tensorflow as tf; print(bool(tf.config.list_physical_devices('GPU')))")
precisions=float32,mixed_bfloat16
[ "$gpu" = True ] && precisions=float32,mixed_float16
timeout 480 "$py" bench/bench_precision.py --variants roadnet-lite,roadnet \
    --precisions "$precisions" --scene "$scene/scene.tif" --reps 2 --json "$out/precision.json"
timeout 240 "$py" bench/bench_tta.py "$scene/scene.tif" --views 1,4 --reps 2 --workers 1 \
    | tee "$out/tta.jsonl"

#!/usr/bin/env bash
# Wheels the GPU machines' image lacks for the model part of bench/device_check.sh:
#   bash bench/device_wheels.sh [DIR] [PYTHON_VERSION]     # DIR default .device-wheels
# The lent GPU machines (BENCHMARKS.md, "GPU machines") have Python 3.12 with PyTorch and JAX
# but no TensorFlow, Keras or pydantic, and reach no package index. This downloads, here,
# the same Keras and pydantic versions as .venv, built for that Python (about 6 MB), into an
# ignored folder the device call carries (`carry: [".device-wheels"]`).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-.device-wheels}
pyver=${2:-3.12}
pins=$(.venv/bin/python - <<'PY'
from importlib.metadata import version
names = ["keras", "optree", "namex", "pydantic", "pydantic-core", "annotated-types",
         "typing-inspection"]
print(" ".join(f"{n}=={version(n)}" for n in names))
PY
)
rm -rf "$dir"
mkdir -p "$dir"
# shellcheck disable=SC2086
.venv/bin/python -m pip download --quiet --no-deps --only-binary=:all: -d "$dir" \
    --python-version "$pyver" --platform manylinux_2_28_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 $pins
ls "$dir"
du -sh "$dir"

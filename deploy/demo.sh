#!/usr/bin/env bash
# The demo job: render a scene from the bundled OSM extract, rasterize its labels, preview it.
# Grows into the whole job (inference, Zarr, vectors) as the pipeline lands.
set -euo pipefail
out=${1:-demo-out}
bin=.venv/bin
mkdir -p "$out"
$bin/roadnet synth --osm test --gsd 0.5 --size 2048x2048 --seed 7 --out "$out/scene" --overwrite
$bin/roadnet preview "$out/scene/scene.tif" --labels "$out/scene/labels" --out "$out/preview.png" --overwrite
echo "demo outputs in $out/"

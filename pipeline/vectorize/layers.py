"""The road layer's files: GeoPackage or GeoParquet layers and the road graph, written safely.

A vectorize run writes three layers and a graph:

- ``road_surface``: one polygon per connected road component, with ``area_m2``,
  ``perimeter_m`` and ``model_sha256`` (the result's model);
- ``road_centerline``: the road graph's edges, LineStrings with ``u``, ``v`` (node ids) and
  ``length_m``;
- ``road_node``: its nodes, Points with ``id`` and ``degree``;
- the graph as GraphML, which ``networkx.read_graphml`` loads (:func:`read_graph` gives
  it back as a ``MultiGraph`` with coordinates, lengths and edge geometry).

Formats: ``gpkg`` writes ``OUT.gpkg`` (the three layers), ``OUT.graphml`` and
``OUT.roadnet-config.yaml`` side by side; ``parquet`` writes the directory ``OUT`` holding
``road_surface.parquet``, ``road_centerline.parquet``, ``road_node.parquet``,
``roads.graphml`` and ``roadnet-config.yaml``. Every file is written under a temporary name
and renamed into place once all are written, the layer file (or directory) last, so a killed
run never leaves a file that looks complete; existing outputs are replaced only with
``overwrite``.

To an object store (``OUT`` an fsspec URL such as ``s3://bucket/roads.gpkg``) the files are
written to a local temporary directory the same way, then uploaded one whole object each
(an object appears only once its upload completes), the layer file last; for ``parquet``
the directory's ``roadnet-config.yaml`` goes last and marks the directory complete. An
existing output there is removed first with ``overwrite`` (its config first).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from xml.sax.saxutils import escape

import geopandas as gpd
import networkx as nx
import numpy as np
import shapely

from roadnet.errors import InputError
from roadnet.outputs import remove_output, replace_with, upload_files
from roadnet.paths import Location, StorageOptions, is_url, with_name
from roadnet.pipeline.preflight import check_layer_outputs

__all__ = [
    "LAYERS",
    "Format",
    "RoadLayers",
    "frame",
    "layer_paths",
    "read_graph",
    "write_graphml",
    "write_layers",
]

Format = Literal["gpkg", "parquet"]
LAYERS = ("road_surface", "road_centerline", "road_node")
CONFIG_NAME = "roadnet-config.yaml"


@dataclass(frozen=True)
class RoadLayers:
    """The three layers of a road map, in one projected CRS.

    Attributes:
        surface: ``road_surface`` polygons with ``area_m2``, ``perimeter_m``,
            ``model_sha256``.
        centerline: ``road_centerline`` LineStrings with ``u``, ``v``, ``length_m``.
        nodes: ``road_node`` Points with ``id``, ``degree``.
    """

    surface: gpd.GeoDataFrame
    centerline: gpd.GeoDataFrame
    nodes: gpd.GeoDataFrame

    def frames(self) -> dict[str, gpd.GeoDataFrame]:
        """``{layer name: GeoDataFrame}`` in :data:`LAYERS` order."""
        return dict(zip(LAYERS, (self.surface, self.centerline, self.nodes), strict=True))

    def graph(self) -> nx.MultiGraph:
        """The road graph as a ``networkx.MultiGraph``.

        Nodes carry ``x``, ``y``, ``degree``; edges ``length`` (metres) and ``geometry`` (a
        shapely LineString from ``u`` to ``v``).
        """
        graph = nx.MultiGraph(crs=self.nodes.crs.to_wkt() if self.nodes.crs else "")
        xy = shapely.get_coordinates(self.nodes.geometry.to_numpy())
        for i, (x, y), degree in zip(
            self.nodes["id"].tolist(), xy.tolist(), self.nodes["degree"].tolist(), strict=True
        ):
            graph.add_node(int(i), x=float(x), y=float(y), degree=int(degree))
        for u, v, length, line in zip(
            self.centerline["u"].tolist(),
            self.centerline["v"].tolist(),
            self.centerline["length_m"].tolist(),
            self.centerline.geometry.to_numpy(),
            strict=True,
        ):
            graph.add_edge(int(u), int(v), length=float(length), geometry=line)
        return graph


def layer_paths(out: Location, *, fmt: Format) -> dict[str, Any]:
    """Where a run writes: ``layers`` (file or directory), ``graph`` and ``config``.

    Paths for a local ``out``, URLs (str) for a URL.
    """
    if is_url(out):
        url = str(out).rstrip("/")
        name = url.rsplit("/", 1)[-1]
        if fmt == "gpkg":
            stem = name[: -len(".gpkg")] if name.lower().endswith(".gpkg") else name
            return {
                "layers": url,
                "graph": with_name(url, f"{stem}.graphml"),
                "config": with_name(url, f"{stem}.{CONFIG_NAME}"),
            }
        return {"layers": url, "graph": f"{url}/roads.graphml", "config": f"{url}/{CONFIG_NAME}"}
    out = Path(out)
    if fmt == "gpkg":
        return {
            "layers": out,
            "graph": out.with_suffix(".graphml"),
            "config": out.with_name(f"{out.stem}.{CONFIG_NAME}"),
        }
    return {"layers": out, "graph": out / "roads.graphml", "config": out / CONFIG_NAME}


@contextmanager
def _staged(path: Path) -> Iterator[Path]:
    """A temporary sibling of ``path``, removed if the body fails."""
    tmp = path.with_name(f".{path.stem}.partial-{os.getpid()}{path.suffix}")
    _remove(tmp)
    try:
        yield tmp
    except BaseException:
        _remove(tmp)
        raise


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def write_layers(
    layers: RoadLayers,
    out: Location,
    *,
    fmt: Format = "gpkg",
    config_text: str = "",
    overwrite: bool = False,
    storage_options: StorageOptions | None = None,
) -> dict[str, Any]:
    """Write the layers, the graph and the resolved config; return their paths (or URLs).

    Args:
        layers: the road layers.
        out: ``OUT.gpkg`` or (parquet) an output directory; local, or an fsspec URL.
        fmt: ``gpkg`` or ``parquet``.
        config_text: the resolved config as YAML, written beside the layers.
        overwrite: replace existing outputs.
        storage_options: fsspec options of a URL (default: from the environment).

    Raises:
        OutputExistsError: an output exists and ``overwrite`` is false.
    """
    if is_url(out):
        return _upload_layers(
            layers,
            str(out).rstrip("/"),
            fmt=fmt,
            config_text=config_text,
            overwrite=overwrite,
            storage_options=storage_options,
        )
    out = Path(out)
    check_layer_outputs(out, fmt=fmt, overwrite=overwrite)
    paths = layer_paths(out, fmt=fmt)
    out.parent.mkdir(parents=True, exist_ok=True)
    with _staged(paths["layers"]) as staged:
        if fmt == "gpkg":
            for name, frame in layers.frames().items():
                frame.to_file(staged, layer=name, driver="GPKG", engine="pyogrio")
            with _staged(paths["graph"]) as graph, _staged(paths["config"]) as config:
                write_graphml(layers, graph)
                config.write_text(config_text)
                replace_with(graph, paths["graph"])
                replace_with(config, paths["config"])
        else:
            staged.mkdir()
            for name, frame in layers.frames().items():
                frame.to_parquet(staged / f"{name}.parquet", index=False)
            write_graphml(layers, staged / paths["graph"].name)
            (staged / CONFIG_NAME).write_text(config_text)
        replace_with(staged, paths["layers"])
    return paths


def _upload_layers(
    layers: RoadLayers,
    out: str,
    *,
    fmt: Format,
    config_text: str,
    overwrite: bool,
    storage_options: StorageOptions | None,
) -> dict[str, Any]:
    """:func:`write_layers` to a URL: write locally, then upload whole files, the marker last."""
    check_layer_outputs(out, fmt=fmt, overwrite=overwrite, storage_options=storage_options)
    urls = layer_paths(out, fmt=fmt)
    with tempfile.TemporaryDirectory(prefix="roadnet-layers-") as tmp:
        local = Path(tmp) / out.rsplit("/", 1)[-1]
        written = write_layers(layers, local, fmt=fmt, config_text=config_text)
        if fmt == "gpkg":
            order = [(written["graph"], urls["graph"]), (written["config"], urls["config"])]
            order.append((written["layers"], urls["layers"]))
        else:
            names = sorted(p.name for p in local.iterdir() if p.name != CONFIG_NAME)
            order = [(local / name, f"{out}/{name}") for name in names]
            order.append((written["config"], urls["config"]))
            if overwrite:
                remove_output(out, first=CONFIG_NAME, storage_options=storage_options)
        upload_files(order, storage_options=storage_options)
    return urls


_GRAPHML_HEAD = (
    "<?xml version='1.0' encoding='utf-8'?>\n"
    '<graphml xmlns="http://graphml.graphdrawing.org/xmlns"'
    ' xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'
    ' xsi:schemaLocation="http://graphml.graphdrawing.org/xmlns'
    ' http://graphml.graphdrawing.org/xmlns/1.0/graphml.xsd">\n'
    '  <key id="crs" for="graph" attr.name="crs" attr.type="string" />\n'
    '  <key id="x" for="node" attr.name="x" attr.type="double" />\n'
    '  <key id="y" for="node" attr.name="y" attr.type="double" />\n'
    '  <key id="degree" for="node" attr.name="degree" attr.type="long" />\n'
    '  <key id="length" for="edge" attr.name="length" attr.type="double" />\n'
    '  <key id="geometry" for="edge" attr.name="geometry" attr.type="string" />\n'
    '  <graph edgedefault="undirected">\n'
)
GRAPHML_BATCH = 8192  # nodes or edges formatted per write


def write_graphml(layers: RoadLayers, path: Path) -> None:
    """Stream the road graph to GraphML straight from the layers, a batch of rows at a time.

    The graph of :meth:`RoadLayers.graph` without building it or an XML tree: nodes with
    ``x``, ``y``, ``degree``; edges with ``length`` and ``geometry`` as WKT (GraphML holds
    numbers and strings only), written ``source=u target=v`` as in ``road_centerline``, with
    the multigraph key as ``id`` (0, 1, ... over the edges of one node pair in row order, as
    ``networkx`` numbers them).
    """
    nodes, lines = layers.nodes, layers.centerline
    crs = escape(nodes.crs.to_wkt()) if nodes.crs else ""
    with path.open("w", encoding="utf-8") as f:
        f.write(_GRAPHML_HEAD)
        f.write(f'    <data key="crs">{crs}</data>\n')
        xy = shapely.get_coordinates(nodes.geometry.to_numpy())
        ids, degrees = nodes["id"].to_numpy(), nodes["degree"].to_numpy()
        for start in range(0, len(nodes), GRAPHML_BATCH):
            stop = start + GRAPHML_BATCH
            f.write(
                "".join(
                    f'    <node id="{i}"><data key="x">{x!r}</data><data key="y">{y!r}</data>'
                    f'<data key="degree">{d}</data></node>\n'
                    for i, (x, y), d in zip(
                        ids[start:stop].tolist(),
                        xy[start:stop].tolist(),
                        degrees[start:stop].tolist(),
                        strict=True,
                    )
                )
            )
        seen: dict[tuple[int, int], int] = {}
        us, vs = lines["u"].to_numpy(), lines["v"].to_numpy()
        lengths, geoms = lines["length_m"].to_numpy(), lines.geometry.to_numpy()
        for start in range(0, len(lines), GRAPHML_BATCH):
            stop = start + GRAPHML_BATCH
            rows = []
            for u, v, length, wkt in zip(
                us[start:stop].tolist(),
                vs[start:stop].tolist(),
                lengths[start:stop].tolist(),
                shapely.to_wkt(geoms[start:stop]).tolist(),
                strict=True,
            ):
                pair = (min(u, v), max(u, v))
                key = seen[pair] = seen.get(pair, -1) + 1
                rows.append(
                    f'    <edge source="{u}" target="{v}" id="{key}">'
                    f'<data key="length">{float(length)!r}</data>'
                    f'<data key="geometry">{wkt}</data></edge>\n'
                )
            f.write("".join(rows))
        f.write("  </graph>\n</graphml>\n")


def read_graph(path: str | Path) -> nx.MultiGraph:
    """Load a vectorize run's road graph as a ``networkx.MultiGraph``.

    Args:
        path: the ``.graphml`` file, the ``.gpkg`` beside it, or a parquet output directory.

    Returns:
        Nodes (int ids) with ``x``, ``y`` (map coordinates) and ``degree``; edges with
        ``length`` (metres) and ``geometry`` (shapely LineString); the graph attribute
        ``crs`` holds the CRS as WKT.

    Raises:
        InputError: no graph there.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "roads.graphml"
    elif path.suffix.lower() != ".graphml":
        path = path.with_suffix(".graphml")
    if not path.is_file():
        raise InputError(f"no road graph at {path}")
    loaded = nx.read_graphml(path, node_type=int, force_multigraph=True)
    graph = nx.MultiGraph(**loaded.graph)
    graph.add_nodes_from(loaded.nodes(data=True))
    for u, v, data in loaded.edges(data=True):
        graph.add_edge(
            u, v, length=float(data["length"]), geometry=shapely.from_wkt(data["geometry"])
        )
    return graph


def frame(columns: dict[str, Any], *, crs: Any) -> gpd.GeoDataFrame:
    """A GeoDataFrame of ``columns`` (name to numpy array) and a ``geometry`` column."""
    data = {k: np.asarray(v) for k, v in columns.items() if k != "geometry"}
    return gpd.GeoDataFrame(data, geometry=np.asarray(columns["geometry"]), crs=crs)

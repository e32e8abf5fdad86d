from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
import yaml
from affine import Affine
from scipy import ndimage
from test_cli import run_cli

from roadnet.config import load_config
from roadnet.errors import ConfigError, InputError, OutputExistsError
from roadnet.pipeline.scenes.labels import (
    LABEL_NAMES,
    LabelsConfig,
    make_labels,
    rasterize_labels,
    window_halo,
    write_labels,
)
from roadnet.pipeline.scenes.roads import load_width_table, normalize_roads

UTM = "EPSG:32635"
X0, Y0 = 385_000.0, 6_672_000.0
GSD = 0.5
GRID = Affine(GSD, 0, X0, 0, -GSD, Y0)
CONFIG = LabelsConfig()
EIGHT = np.ones((3, 3), dtype=bool)


def roads_gdf(
    geoms: list[shapely.Geometry], widths: list[float], crs: str = UTM
) -> gpd.GeoDataFrame:
    gdf = gpd.GeoDataFrame({"width_m": widths}, geometry=geoms, crs=crs)
    return normalize_roads(gdf, crs=UTM, widths=load_width_table())


def at(col: float, row: float) -> tuple[float, float]:
    """Map coordinates of a pixel position (col, row) of GRID."""
    return GRID @ (col, row)


def random_network(seed: int, width: int, height: int, n: int = 12) -> gpd.GeoDataFrame:
    rng = np.random.default_rng(seed)
    geoms: list[shapely.Geometry] = []
    for _ in range(n):
        pts = rng.uniform([-40, -40], [width + 40, height + 40], size=(3, 2))
        geoms.append(shapely.LineString([at(c, r) for c, r in pts]))
    widths = list(rng.uniform(2.5, 12.0, size=n))
    # a narrow road polygon, a bent strip 6 m wide spanning most of the grid
    strip = shapely.LineString(
        [
            at(0.1 * width, 0.1 * height),
            at(0.7 * width, 0.2 * height),
            at(0.9 * width, 0.9 * height),
        ]
    ).buffer(3.0, cap_style="flat")
    return roads_gdf([*geoms, strip], [*widths, np.nan])


def transitions(surface: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Surface pixels with a non-surface 4-neighbour, and non-surface ones with a surface one."""
    s = np.pad(surface.astype(bool), 1, mode="edge")
    core = s[1:-1, 1:-1]
    neighbours = [s[:-2, 1:-1], s[2:, 1:-1], s[1:-1, :-2], s[1:-1, 2:]]
    any_off = np.logical_or.reduce([~n for n in neighbours])
    any_on = np.logical_or.reduce(neighbours)
    return core & any_off, ~core & any_on


def test_straight_road_of_known_width_gives_exact_pixel_counts() -> None:
    width, height = 120, 80
    # 6.5 m wide at 0.5 m/px, centred on the centres of row 40: rows 34..46 are inside
    road = shapely.LineString([at(-30, 40.5), at(width + 30, 40.5)])
    labels = rasterize_labels(
        roads_gdf([road], [6.5]), transform=GRID, shape=(height, width), config=CONFIG
    )
    for name in LABEL_NAMES:
        assert labels[name].shape == (height, width)
        assert labels[name].dtype == np.uint8
        assert set(np.unique(labels[name])) <= {0, 1}
    rows = {name: np.flatnonzero(labels[name].any(axis=1)).tolist() for name in LABEL_NAMES}
    assert rows["surface"] == list(range(34, 47))
    assert labels["surface"].sum() == 13 * width
    assert rows["edge"] == [33, 34, 46, 47]
    assert labels["edge"].sum() == 4 * width
    assert rows["centerline"] == [40]
    assert labels["centerline"].sum() == width


def test_diagonal_road_centerline_is_connected_and_thin() -> None:
    width, height = 200, 160
    road = shapely.LineString([at(-20, 150.3), at(220, 11.7)])  # about 30 degrees
    labels = rasterize_labels(
        roads_gdf([road], [5.0]), transform=GRID, shape=(height, width), config=CONFIG
    )
    centre = labels["centerline"].astype(bool)
    _, components = ndimage.label(centre, structure=EIGHT)
    assert components == 1
    per_column = centre.sum(axis=0)
    assert per_column.min() >= 1 and per_column.max() <= 3
    # thickness across the line: 1-3 px along the normal
    rows, cols = np.nonzero(centre)
    x, y = GRID @ (cols + 0.5, rows + 0.5)
    assert shapely.distance(shapely.points(x, y), road).max() <= GSD * np.sqrt(2) / 2 + 1e-9
    assert (labels["surface"][centre] == 1).all()
    # surface area within the grid matches the buffer's area within the grid
    frame = shapely.box(*(GRID @ (0, height)), *(GRID @ (width, 0)))
    expected = road.buffer(2.5, cap_style="flat").intersection(frame).area / GSD**2
    assert labels["surface"].sum() == pytest.approx(expected, rel=0.01)


def test_edge_pixels_lie_on_the_surface_boundary() -> None:
    width, height = 300, 260
    labels = rasterize_labels(
        random_network(1, width, height), transform=GRID, shape=(height, width), config=CONFIG
    )
    surface, edge = labels["surface"].astype(bool), labels["edge"].astype(bool)
    assert 0 < surface.mean() < 0.8
    inner, outer = transitions(surface)
    # away from the grid border (where the neighbour outside the grid is unknown) the edge is
    # exactly the pixels on either side of a surface/non-surface transition
    core = (slice(1, -1), slice(1, -1))
    assert np.array_equal(edge[core], (inner | outer)[core])
    # every edge pixel is within 1 px of a transition
    near = ndimage.binary_dilation(inner | outer, structure=EIGHT)
    assert near[edge].all()


def test_wider_edge_band_straddles_the_boundary() -> None:
    road = shapely.LineString([at(-30, 40.5), at(150, 40.5)])
    config = LabelsConfig(edge_width_px=4, centerline_dilate_px=1)
    labels = rasterize_labels(
        roads_gdf([road], [6.5]), transform=GRID, shape=(80, 120), config=config
    )
    rows = np.flatnonzero(labels["edge"].any(axis=1)).tolist()
    assert rows == [32, 33, 34, 35, 45, 46, 47, 48]
    assert np.flatnonzero(labels["centerline"].any(axis=1)).tolist() == [39, 40, 41]


def test_road_polygon_centerline_is_its_skeleton() -> None:
    bend = shapely.LineString([at(20, 20), at(150, 20), at(150, 120)])
    polygon = bend.buffer(4.0, cap_style="flat", join_style="mitre")
    labels = rasterize_labels(
        roads_gdf([polygon], [np.nan]), transform=GRID, shape=(140, 180), config=CONFIG
    )
    centre = labels["centerline"].astype(bool)
    assert ndimage.label(centre, structure=EIGHT)[1] == 1
    assert (labels["surface"][centre] == 1).all()
    rows, cols = np.nonzero(centre)
    x, y = GRID @ (cols + 0.5, rows + 0.5)
    distance = shapely.distance(shapely.points(x, y), bend)
    assert np.median(distance) <= GSD  # on the middle of the strip, not its sides
    assert centre.sum() == pytest.approx(bend.length / GSD, rel=0.15)
    off = rasterize_labels(
        roads_gdf([polygon], [np.nan]),
        transform=GRID,
        shape=(140, 180),
        config=LabelsConfig(polygon_centerlines=False),
    )
    assert off["centerline"].sum() == 0


def test_a_window_equals_the_same_pixels_of_the_whole_grid() -> None:
    roads = random_network(2, 300, 260)
    whole = rasterize_labels(roads, transform=GRID, shape=(260, 300), config=CONFIG)
    window = rasterize_labels(
        roads, transform=GRID @ Affine.translation(117, 83), shape=(90, 101), config=CONFIG
    )
    for name in LABEL_NAMES:
        assert np.array_equal(window[name], whole[name][83:173, 117:218]), name


def write_grid(roads: gpd.GeoDataFrame, out: Path, *, width: int, height: int) -> dict[str, Path]:
    """Write labels of a GRID-based grid in 512 px windows."""
    return write_labels(
        roads,
        crs=UTM,
        transform=GRID,
        width=width,
        height=height,
        out_dir=out,
        config=CONFIG,
        block=512,
    )


def test_windowed_write_equals_the_single_window_kernel(tmp_path: Path) -> None:
    width, height = 1100, 700  # 3 x 2 windows of 512, ragged at the right and bottom
    roads = random_network(3, width, height, n=25)
    whole = rasterize_labels(roads, transform=GRID, shape=(height, width), config=CONFIG)
    paths = write_grid(roads, tmp_path, width=width, height=height)
    assert set(paths) == set(LABEL_NAMES)
    for name, path in paths.items():
        with rasterio.open(path) as src:
            assert src.crs.to_epsg() == 32635
            assert src.transform == GRID
            assert (src.width, src.height, src.count, src.dtypes[0]) == (width, height, 1, "uint8")
            assert src.block_shapes == [(512, 512)]
            assert src.compression.name == "deflate"
            assert np.array_equal(src.read(1), whole[name]), name


def test_wide_road_polygons_get_a_wider_halo(tmp_path: Path) -> None:
    # 60 m = 120 px wide: thinning reaches 60 px from the outline, more than halo_px (32)
    bend = shapely.LineString([at(80, 200), at(700, 260), at(900, 560)])
    plaza = shapely.Point(at(520, 330)).buffer(40.0)
    roads = roads_gdf([bend.buffer(30.0, cap_style="flat"), plaza], [np.nan, np.nan])
    config = LabelsConfig()
    assert window_halo(roads, transform=GRID, config=config) == 80 + 8  # plaza radius 80 px
    whole = rasterize_labels(roads, transform=GRID, shape=(600, 1024), config=CONFIG)
    paths = write_grid(roads, tmp_path, width=1024, height=600)
    with rasterio.open(paths["centerline"]) as src:
        windowed = src.read(1)
    assert np.array_equal(windowed, whole["centerline"])
    # with the configured halo alone the windows would not join exactly
    narrow = rasterize_labels(
        roads,
        transform=GRID @ Affine.translation(512, 0),
        shape=(512, 512),
        config=config,
        halo_px=config.halo_px,
    )
    assert not np.array_equal(narrow["centerline"], whole["centerline"][:512, 512:])


def test_writer_memory_is_bounded_by_the_block_not_the_grid(tmp_path: Path) -> None:
    side = 4096  # 16 MiB per uint8 label grid
    roads = roads_gdf(
        [
            shapely.LineString([at(0, 0), at(side, side)]),
            shapely.LineString([at(0, 2000), at(side, 2100)]),
        ],
        [8.0, 6.0],
    )
    tracemalloc.start()
    try:
        write_grid(roads, tmp_path, width=side, height=side)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20, peak
    with rasterio.open(tmp_path / "centerline.tif") as src:
        assert src.read(1, window=((4000, 4010), (4000, 4010))).trace() == 10
        assert src.read(1, window=((0, 512), (3584, 4096))).sum() == 0  # never-written tiles


def write_roads(
    path: Path, geoms: list[shapely.Geometry], crs: str | None = "EPSG:4326", **cols: list[object]
) -> Path:
    gdf = (
        gpd.GeoDataFrame(cols, geometry=geoms, crs=UTM).to_crs(crs)
        if crs
        else gpd.GeoDataFrame(cols, geometry=geoms)
    )
    gdf.to_file(path)
    return path


@pytest.fixture
def scene_and_roads(make_scene: Callable[..., Path], tmp_path: Path) -> tuple[Path, Path]:
    scene = make_scene(256, 192)  # 0.3 m/px from (385000, 6672000), UTM 35N
    with rasterio.open(scene) as src:
        t = src.transform
    road = shapely.LineString([t @ (-20, 95), t @ (280, 95)])
    side = shapely.LineString([t @ (128, 95), t @ (128, 220)])
    roads = write_roads(
        tmp_path / "roads.gpkg",
        [road, side],
        highway=["secondary", "residential"],
        lanes=["2", None],
    )
    return scene, roads


def test_make_labels_follows_the_scene_grid(
    scene_and_roads: tuple[Path, Path], tmp_path: Path
) -> None:
    scene, roads_path = scene_and_roads
    out = tmp_path / "labels"
    paths = make_labels(scene, roads_path, out, config=CONFIG, overwrite=False)
    assert sorted(p.name for p in out.iterdir()) == [
        "centerline.tif",
        "edge.tif",
        "roadnet-config.yaml",
        "surface.tif",
    ]
    widths = load_width_table()
    with rasterio.open(scene) as src:
        crs, transform, shape = src.crs, src.transform, src.shape
    expected = rasterize_labels(
        gpd.read_file(roads_path).pipe(normalize_roads, crs=crs, widths=widths),
        transform=transform,
        shape=shape,
        config=CONFIG,
    )
    for name, path in paths.items():
        with rasterio.open(path) as lab:
            assert lab.crs == crs
            assert lab.transform == transform
            assert lab.shape == shape
            assert np.array_equal(lab.read(1), expected[name])
    # the secondary road is 2 lanes wide: its surface rows match the table's width
    road_rows = expected["surface"][:, 10].sum()
    assert road_rows * 0.3 == pytest.approx(widths.width_m("secondary"), abs=0.6)
    resolved = yaml.safe_load((out / "roadnet-config.yaml").read_text())
    assert resolved["config"]["edge_width_px"] == 2
    assert resolved["scene"] == str(scene.resolve())
    assert resolved["roads_in_extent"] == 2


def test_make_labels_bad_input(
    scene_and_roads: tuple[Path, Path], make_scene: Callable[..., Path], tmp_path: Path
) -> None:
    scene, roads = scene_and_roads
    out = tmp_path / "out"
    text = tmp_path / "notes.tif"
    text.write_text("hello")
    cases: list[tuple[Path, Path, str]] = [
        (tmp_path / "missing.tif", roads, "raster not found: .*missing.tif"),
        (text, roads, "notes.tif: not a raster"),
        (make_scene(name="nocrs.tif", crs=None), roads, "nocrs.tif: raster has no CRS"),
        (scene, tmp_path / "missing.gpkg", "road vectors not found"),
    ]
    far = shapely.LineString([(395_000, 6_682_000), (395_100, 6_682_000)])
    cases.append(
        (
            scene,
            write_roads(tmp_path / "far.gpkg", [far], width=[5.0]),
            "no roads of .*far.gpkg lie in the extent",
        )
    )
    near = shapely.LineString([(385_010, 6_671_980), (385_050, 6_671_980)])
    cases.append(
        (scene, write_roads(tmp_path / "odd.gpkg", [near], highway=["skyway"]), "'skyway'")
    )
    with pytest.warns(UserWarning, match="crs"):
        cases.append(
            (scene, write_roads(tmp_path / "nocrs.gpkg", [near], crs=None, width=[5.0]), "no CRS")
        )
    for scene_path, roads_path, message in cases:
        with pytest.raises(InputError, match=message):
            make_labels(scene_path, roads_path, out, config=CONFIG, overwrite=True)
        assert not out.exists()
    assert not list(tmp_path.glob("*.partial-*"))


def test_make_labels_never_overwrites_without_permission(
    scene_and_roads: tuple[Path, Path], tmp_path: Path
) -> None:
    scene, roads = scene_and_roads
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    with pytest.raises(OutputExistsError, match="not empty"):
        make_labels(scene, roads, out, config=CONFIG, overwrite=False)
    assert (out / "keep.txt").read_text() == "precious"
    # a failing run with --overwrite leaves the old output in place too
    with pytest.raises(InputError):
        make_labels(scene, tmp_path / "missing.gpkg", out, config=CONFIG, overwrite=True)
    assert (out / "keep.txt").read_text() == "precious"
    make_labels(scene, roads, out, config=CONFIG, overwrite=True)
    assert not (out / "keep.txt").exists()
    assert (out / "surface.tif").exists()


def test_config_validation(tmp_path: Path) -> None:
    assert load_config(LabelsConfig, "labels") == LabelsConfig()
    with pytest.raises(ConfigError, match="halo_px"):
        load_config(LabelsConfig, overrides=["halo_px=2", "edge_width_px=6"])
    with pytest.raises(ConfigError, match="block_px"):
        load_config(LabelsConfig, overrides=["block_px=1000"])


def test_cli_labels(scene_and_roads: tuple[Path, Path], tmp_path: Path) -> None:
    scene, roads = scene_and_roads
    out = tmp_path / "cli-out"
    (tmp_path / "labels").mkdir()  # a folder named like the bundled config must not shadow it
    done = run_cli(
        "labels",
        str(scene),
        str(roads),
        "--out",
        str(out),
        "--set",
        "edge_width_px=3",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert yaml.safe_load((out / "roadnet-config.yaml").read_text())["config"]["edge_width_px"] == 3
    with rasterio.open(out / "edge.tif") as src:
        assert src.read(1)[:, 10].sum() == 2 * 3  # a 3 px band on both sides of the road

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from _cli import run_in_one_process

ROADNET = [sys.executable, "-m", "roadnet.pipeline.cli"]


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [*ROADNET, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=600
    )


def test_version_and_help_do_not_import_heavy_libraries() -> None:
    code = (
        "import sys; sys.argv = ['roadnet', '--help'];\n"
        "from roadnet.pipeline import cli\n"
        "try:\n    cli.main()\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'dask', 'rasterio', 'xarray') "
        "if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "HEAVY []" in out.stdout, out.stdout + out.stderr
    assert "labels" in out.stdout


def test_version() -> None:
    out = run_cli("--version")
    assert out.returncode == 0
    assert out.stdout.startswith("roadnet 0.")


def test_library_error_is_one_line_exit_2(tmp_path: Path) -> None:
    out = run_cli("preview", str(tmp_path / "missing.tif"), "--out", str(tmp_path / "p.png"))
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("roadnet: error:")
    assert "missing.tif" in lines[0]


def test_verbose_shows_traceback(tmp_path: Path) -> None:
    out = run_cli(
        "--verbose", "preview", str(tmp_path / "missing.tif"), "--out", str(tmp_path / "p.png")
    )
    assert out.returncode == 2
    assert "Traceback" in out.stderr


def test_unknown_config_key_is_an_error(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("lane_widht_m: 3.0\n")
    out = run_cli("labels", "a.tif", "b.gpkg", "--out", str(tmp_path / "o"), "--config", str(cfg))
    assert out.returncode == 2
    assert "lane_widht_m" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_usage_errors_print_usage_and_exit_2() -> None:
    out = run_cli("evaluate", "--no-such-option")
    assert out.returncode == 2, out.stderr
    assert "No such option: --no-such-option" in out.stderr
    assert "Usage: " in out.stderr and "unexpected" not in out.stderr
    out = run_cli("vectorize")
    assert out.returncode == 2, out.stderr
    assert "Missing argument" in out.stderr and "unexpected" not in out.stderr


def _assert_refused_light(cases: list[tuple[list[str], str]]) -> None:
    """Each command line exits 2 with one line holding its message, no heavy library loaded."""
    answers = run_in_one_process([args for args, _ in cases])
    for (args, message), answer in zip(cases, answers, strict=True):
        assert answer.code == 2, (args, answer)
        lines = answer.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (args, answer.stderr)
        assert answer.heavy == [], (args, answer.heavy)


def test_run_refuses_bad_paths_before_heavy_imports(tmp_path: Path) -> None:
    from _models import smooth_scene, write_scene

    scene = write_scene(tmp_path / "scene.tif", smooth_scene(64, 64))
    done = tmp_path / "done.zarr"
    done.mkdir()
    (done / "zarr.json").write_text("{}")
    roads = tmp_path / "roads.gpkg"
    roads.write_bytes(b"keep me")
    cases = [
        (["run", str(tmp_path / "missing.tif"), "--out", str(tmp_path / "r.zarr")], "missing.tif"),
        (["run", str(scene), "--out", str(done)], "--overwrite"),
        (
            ["run", str(scene), "--out", str(tmp_path / "r.zarr"), "--vectorize", str(roads)],
            "--overwrite",
        ),
        (
            ["run", str(scene), "--out", str(tmp_path / "r.zarr"), "--vectorize", "roads.shp"],
            "must end in .gpkg",
        ),
    ]
    _assert_refused_light(cases)
    assert (done / "zarr.json").read_text() == "{}" and roads.read_bytes() == b"keep me"
    assert not (tmp_path / "r.zarr").exists() and not (tmp_path / "r.zarr.partial-run").exists()


def test_preview_and_export_refuse_bad_paths_before_heavy_imports(tmp_path: Path) -> None:
    from _models import smooth_scene, write_scene

    scene = write_scene(tmp_path / "scene.tif", smooth_scene(64, 64))
    png = tmp_path / "look.png"
    png.write_bytes(b"keep me")
    cogs = tmp_path / "cogs"
    cogs.mkdir()
    (cogs / "surface.tif").write_bytes(b"keep me too")
    unfinished = tmp_path / "r.zarr.partial-run"
    unfinished.mkdir()
    preview = ["preview", str(scene), "--out"]
    cases = [
        (["preview", str(tmp_path / "missing.tif"), "--out", "x.png"], "missing.tif"),
        ([*preview, str(png)], "--overwrite"),
        ([*preview, "x.png", "--labels", str(tmp_path / "nolabels")], "nolabels"),
        ([*preview, "x.png", "--result", str(tmp_path / "r.zarr")], "not finished"),
        ([*preview, "x.png", "--roads", str(tmp_path / "roads.gpkg")], "road layer not found"),
        (["export", str(tmp_path / "none.zarr"), "--out", "x"], "no roadnet result"),
        (["export", str(tmp_path / "r.zarr"), "--out", "x"], "not finished"),
    ]
    _assert_refused_light(cases)
    assert png.read_bytes() == b"keep me"
    assert not Path("x.png").exists()


def test_export_refuses_a_non_empty_directory_before_heavy_imports(tmp_path: Path) -> None:
    from _results import road_codes, write_result

    result = write_result(tmp_path / "r.zarr", road_codes(64, 64), chunk=32)
    out = tmp_path / "cogs"
    out.mkdir()
    (out / "surface.tif").write_bytes(b"keep me")
    (answer,) = run_in_one_process([["export", str(result), "--out", str(out)]])
    assert answer.code == 2 and "is not empty" in answer.stderr, answer
    assert answer.heavy == [], answer.heavy
    assert (out / "surface.tif").read_bytes() == b"keep me"

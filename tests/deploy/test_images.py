"""deploy/docker/Dockerfile{,.gpu} and .dockerignore: dependencies cached before the source,
every package the project installs is copied and not ignored, and the GPU image's
dependencies resolve together with dask-cuda (constraints-gpu.txt, checked with uv)."""

from __future__ import annotations

import fnmatch
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

PROJECT = Path(__file__).resolve().parents[2]
DOCKER = PROJECT / "deploy" / "docker"
DOCKERFILES = [DOCKER / "Dockerfile", DOCKER / "Dockerfile.gpu"]
CONSTRAINTS = DOCKER / "constraints-gpu.txt"
UV = Path(sys.executable).with_name("uv")


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` with continuation lines joined and comments dropped."""
    lines = [ln for ln in dockerfile.read_text().splitlines() if not ln.lstrip().startswith("#")]
    text = "\n".join(lines).replace("\\\n", " ")
    return [
        (ln.split(None, 1)[0].upper(), ln.split(None, 1)[1] if " " in ln.strip() else "")
        for ln in text.splitlines()
        if ln.strip()
    ]


def _pyproject() -> dict:  # type: ignore[type-arg]
    return tomllib.loads((PROJECT / "pyproject.toml").read_text())


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dependency_layer_comes_before_the_source(dockerfile: Path) -> None:
    steps = _instructions(dockerfile)
    copies = [(i, args.split()) for i, (op, args) in enumerate(steps) if op == "COPY"]
    runs = [(i, args) for i, (op, args) in enumerate(steps) if op == "RUN"]
    first_source = min(i for i, args in copies if args[0] in {"roadnet", "pipeline", "model"})
    deps = [i for i, args in runs if "-r requirements.txt -c constraints.txt" in args]
    (deps_step,) = deps
    # Only pyproject.toml and the constraints reach the image before dependencies install.
    before = [args[0] for i, args in copies if i < deps_step]
    assert before == ["pyproject.toml", "deploy/docker/constraints-gpu.txt"]
    assert deps_step < first_source
    (package_step,) = [i for i, args in runs if "--no-deps ." in args]
    assert package_step > max(i for i, _ in copies)
    # Every package directory the project installs is copied into the image.
    copied = {args[0] for _, args in copies}
    assert set(_pyproject()["tool"]["setuptools"]["package-dir"].values()) <= copied
    assert "README.md" in copied  # pyproject's readme: the build needs it
    user = [args for op, args in steps if op == "USER"]
    assert user and user[-1].split(":")[0] not in {"0", "root"}


def _dockerignored(path: str, patterns: list[str]) -> bool:
    """Whether Docker leaves ``path`` (or a folder above it) out of the build context."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern.lstrip("!").rstrip("/")
        variants = {pat, pat.removeprefix("**/")}
        if any(fnmatch.fnmatchcase(p, v) for p in prefixes for v in variants) or (
            pat.startswith("**/") and any(fnmatch.fnmatchcase(part, pat[3:]) for part in parts)
        ):
            ignored = not negate
    return ignored


def test_dockerignore_keeps_the_source_and_drops_local_state() -> None:
    patterns = [
        ln.strip()
        for ln in (PROJECT / ".dockerignore").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    for dockerfile in DOCKERFILES:
        for op, args in _instructions(dockerfile):
            if op == "COPY":
                source = args.split()[0]
                assert not _dockerignored(source, patterns), source
                assert (PROJECT / source).exists(), source
    assert not _dockerignored("model/weights/roadnet-lite.keras", patterns)  # the shipped model
    for local in [
        ".venv",
        "runs",
        "demo-out",
        "build",
        ".git",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
        "pipeline/__pycache__/cli.cpython-311.pyc",
        "roadnet.egg-info",
    ]:
        assert _dockerignored(local, patterns), local


def _compile(requirements: list[str], tmp_path: Path) -> dict[str, str]:
    """Resolve ``requirements`` with the constraints as the images do; name -> version."""
    infile = tmp_path / "requirements.in"
    infile.write_text("\n".join(requirements) + "\n")
    proc = subprocess.run(
        [str(UV), "pip", "compile", str(infile), "-c", str(CONSTRAINTS), "--python-version",
         "3.11", "--python-platform", "x86_64-manylinux_2_28", "--no-build", "--quiet",
         "--no-header", "--no-annotate", "-o", str(tmp_path / "resolved.txt")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    offline = re.search(r"(?i)(failed to fetch|connect|dns|network)", proc.stderr)
    if proc.returncode != 0 and offline:
        pytest.skip(f"the package index is unreachable: {proc.stderr.strip().splitlines()[-1]}")
    assert proc.returncode == 0, proc.stderr
    pins = {}
    for line in (tmp_path / "resolved.txt").read_text().splitlines():
        if "==" in line:
            name, version = line.split("==")
            pins[name.strip().lower()] = version.strip()
    return pins


def _constraint_pins() -> dict[str, str]:
    pins = {}
    for line in CONSTRAINTS.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", line  # exact pins: the cluster's versions
            pins[req.name.lower()] = spec.version
    return pins


def test_gpu_image_dependencies_resolve_with_dask_cuda(tmp_path: Path) -> None:
    project = _pyproject()["project"]
    pins = _compile(
        [*project["dependencies"], *project["optional-dependencies"]["gpu"], "dask-cuda"],
        tmp_path,
    )
    wanted = _constraint_pins()
    for name in ("dask-cuda", "rapids-dask-dependency", "dask", "distributed"):
        assert pins[name] == wanted[name], name  # not a backtracked, unbuildable dask-cuda
    assert pins["dask"] == pins["distributed"]
    for requirement in map(Requirement, project["dependencies"]):
        name = requirement.name.lower()
        assert requirement.specifier.contains(pins[name], prereleases=True), requirement


def test_cpu_image_gets_the_same_dask_as_the_gpu_image(tmp_path: Path) -> None:
    pins = _compile(_pyproject()["project"]["dependencies"], tmp_path)
    wanted = _constraint_pins()
    assert (pins["dask"], pins["distributed"]) == (wanted["dask"], wanted["distributed"])
    assert "dask-cuda" not in pins

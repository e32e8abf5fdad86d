"""Across deploy/: every `roadnet`, `dask scheduler` and `dask worker` command the recipes run
parses with the real command-line interfaces, and every worker follows the layout rule of the
README ("roadnet run", "Where it runs"): CPU workers are single-threaded processes, one per
core they are given; a GPU worker is one process per GPU with a thread per core it is given."""

from __future__ import annotations

import configparser
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

PROJECT = Path(__file__).resolve().parents[2]
DEPLOY = PROJECT / "deploy"


def _compose_commands() -> list[tuple[str, list[str], dict[str, Any]]]:
    services = yaml.safe_load((DEPLOY / "docker" / "compose.yaml").read_text())["services"]
    tls = yaml.safe_load((DEPLOY / "docker" / "compose.tls.yaml").read_text())["services"]
    return [
        (f"compose:{name}", service["command"], {"cpus": service.get("cpus")})
        for name, service in services.items()
    ] + [
        (f"compose.tls:{name}", service["command"], {"cpus": services[name].get("cpus")})
        for name, service in tls.items()
    ]


def _kubernetes_commands() -> list[tuple[str, list[str], dict[str, Any]]]:
    found = []
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") == "Kustomization":
                continue
            pods = []
            if doc["kind"] == "DaskCluster":
                pods = [doc["spec"]["worker"]["spec"], doc["spec"]["scheduler"]["spec"]]
            elif doc["kind"] == "DaskWorkerGroup":
                pods = [doc["spec"]["worker"]["spec"]]
            elif doc["kind"] == "CronJob":
                pods = [doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]]
            for pod in pods:
                for container in pod["containers"]:
                    label = f"{path.name}:{doc['kind']}/{container['name']}"
                    found.append((label, container["command"], container["resources"]))
    return found


def _systemd_commands() -> list[tuple[str, list[str], dict[str, Any]]]:
    unit = configparser.ConfigParser(interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(DEPLOY / "systemd" / "roadnet-nightly.service")
    env = dict(
        line.split("=", 1)
        for line in (DEPLOY / "systemd" / "nightly.env").read_text().splitlines()
        if line and not line.startswith("#")
    )
    command = re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], unit["Service"]["ExecStart"])
    args = shlex.split(command)
    args[0] = Path(args[0]).name
    return [("roadnet-nightly.service", args, {})]


COMMANDS = _compose_commands() + _kubernetes_commands() + _systemd_commands()


def _cli(name: str):  # type: ignore[no-untyped-def]
    """The click command behind ``roadnet <name>`` / ``dask <name>``, or None."""
    if name in {"scheduler", "worker"}:
        from distributed.cli import dask_scheduler, dask_worker

        return {"scheduler": dask_scheduler.main, "worker": dask_worker.main}[name]
    import typer

    from roadnet.pipeline.cli import app

    return typer.main.get_command(app).commands.get(name)  # type: ignore[attr-defined]


@pytest.mark.parametrize(("where", "command", "_"), COMMANDS, ids=[c[0] for c in COMMANDS])
def test_recipe_command_parses(
    where: str, command: list[str], _: dict[str, Any], tmp_path: Path
) -> None:
    program, sub, *args = command
    assert program in {"roadnet", "dask"}, where
    cli = _cli(sub)
    if cli is None and program == "roadnet" and sub == "nightly":
        pytest.skip("this checkout's CLI has no `roadnet nightly` yet")
    assert cli is not None, f"{where}: no command {program} {sub}"
    args = [re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", arg) for arg in args]  # compose defaults
    for i, arg in enumerate(args):  # certificates the recipe mounts: files that exist here
        if arg.endswith(".pem"):
            args[i] = str(tmp_path / Path(arg).name)
            Path(args[i]).touch()
    try:
        cli.make_context(f"{program} {sub}", args)
    except Exception as error:  # click's UsageError (typer vendors its own click)
        pytest.fail(f"{where}: {program} {sub} {shlex.join(args)}: {error}")


def _option(command: list[str], name: str, default: str) -> str:
    return command[command.index(name) + 1] if name in command else default


def _cpus(value: str) -> float:
    return float(value[:-1]) / 1000 if value.endswith("m") else float(value)


def test_workers_follow_the_layout_rule() -> None:
    workers = [(w, c, r) for w, c, r in COMMANDS if c[:2] == ["dask", "worker"]]
    assert len(workers) >= 3  # compose, the CPU and the GPU worker groups
    for where, command, resources in workers:
        processes = int(_option(command, "--nworkers", "1"))
        threads = int(_option(command, "--nthreads", "0"))
        if "cpus" in resources:  # compose: one container
            assert resources["cpus"] is not None, where
            cores = float(resources["cpus"])
            gpus = 0
        else:  # Kubernetes: the pod's requests and limits agree
            assert resources["requests"]["cpu"] == resources["limits"]["cpu"], where
            cores = _cpus(str(resources["limits"]["cpu"]))
            gpus = int(resources["limits"].get("nvidia.com/gpu", 0))
        if gpus:
            assert processes == gpus == 1, where  # one worker process per GPU
            assert threads == cores, where
        else:
            assert threads == 1, where
            assert processes == cores, where


def test_slurm_workers_use_every_cpu_of_their_task() -> None:
    script = (DEPLOY / "slurm" / "roadnet.sbatch").read_text()
    assert re.search(r"^#SBATCH --cpus-per-task=\d+$", script, re.M)
    assert "cpus=${SLURM_CPUS_PER_TASK:-1}" in script
    assert '--cpus-per-task="$cpus"' in script  # srun does not inherit it (Slurm >= 22.05)
    assert '--nworkers "$cpus" --nthreads 1' in script


def test_images_keep_math_libraries_single_threaded() -> None:
    for name in ("Dockerfile", "Dockerfile.gpu"):
        text = (DEPLOY / "docker" / name).read_text()
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            assert f"{var}=1" in text, (name, var)

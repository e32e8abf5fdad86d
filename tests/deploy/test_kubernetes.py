"""deploy/kubernetes/: every manifest validates (Kubernetes schemas from kubernetes-validate;
the Dask operator's resources against the CRDs shipped in the dask-kubernetes wheel), and the
pieces fit together: one namespace, the volume they mount is defined, the CronJob reaches the
scheduler Service the operator creates, and the workers follow the layout rule."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import referencing
import yaml

PROJECT = Path(__file__).resolve().parents[2]
K8S = PROJECT / "deploy" / "kubernetes"
MANIFESTS = sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
#: Kubernetes versions validated against: CronJob.timeZone is GA from 1.27.
VERSIONS = ("1.29.0", "1.37.0")
CRD_KINDS = {"DaskCluster", "DaskWorkerGroup", "DaskAutoscaler", "DaskJob"}
_CRDS = "dask_kubernetes.operator.customresources"
_TEMPLATES = f"python://{_CRDS.replace('.', '/')}/templates.yaml"
_K8S_DEFS = "python://k8s_crd_resolver/schemata/k8s-1.21.1.json"
_KV_DEFS = "https://kubernetes.io/api/_definitions.json"


def _documents() -> list[tuple[str, dict[str, Any]]]:
    return [
        (path.name, doc)
        for path in MANIFESTS
        for doc in yaml.safe_load_all(path.read_text())
        if doc is not None
    ]


def _by_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in _documents() if doc["kind"] == kind]


def _resolve(node: Any, templates: dict[str, Any]) -> Any:
    """Inline the CRD's references to its templates; point PodSpec & co. at k8s definitions.

    The CRD sources in the wheel refer to ``templates.yaml`` (inlined here) and to the
    Kubernetes 1.21 definitions of ``k8s_crd_resolver`` (not installed), which are taken from
    kubernetes-validate's strict definitions instead.
    """
    if isinstance(node, list):
        return [_resolve(item, templates) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith(_TEMPLATES):
        name = ref.split("#/definitions/")[1]
        return _resolve(templates["definitions"][name], templates)
    if isinstance(ref, str) and ref.startswith(_K8S_DEFS):
        return {"$ref": f"{_KV_DEFS}#/$defs/{ref.split('#/definitions/')[1]}"}
    return {key: _resolve(value, templates) for key, value in node.items()}


@cache
def _crd_validator(kind: str, version: str) -> jsonschema.Draft202012Validator:
    crd_dir = files(_CRDS)
    templates = yaml.safe_load(crd_dir.joinpath("templates.yaml").read_text())
    crd = yaml.safe_load(crd_dir.joinpath(f"{kind.lower()}.yaml").read_text())
    assert crd["spec"]["names"]["kind"] == kind
    (served,) = (v for v in crd["spec"]["versions"] if v["name"] == "v1")
    schema = _resolve(served["schema"]["openAPIV3Schema"], templates)
    definitions = json.loads(
        files("kubernetes_validate")
        .joinpath(f"kubernetes-json-schema/v{version}-local-strict/_definitions.json")
        .read_text()
    )
    registry = referencing.Registry().with_resource(
        _KV_DEFS, referencing.Resource.from_contents(definitions)
    )
    return jsonschema.Draft202012Validator(schema, registry=registry)


def _validate(doc: dict[str, Any], version: str) -> None:
    if doc["kind"] in CRD_KINDS:
        assert doc["apiVersion"] == "kubernetes.dask.org/v1"
        _crd_validator(doc["kind"], version).validate(doc)
    else:
        kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_validates(version: str) -> None:
    kinds = set()
    for name, doc in _documents():
        try:
            _validate(doc, version)
        except (jsonschema.ValidationError, kubernetes_validate.ValidationError) as error:
            pytest.fail(f"{name}: {doc['kind']} {doc['metadata']['name']}: {error}")
        kinds.add(doc["kind"])
    expected = {"Namespace", "PersistentVolumeClaim", "CronJob", *CRD_KINDS - {"DaskJob"}}
    assert kinds == expected


@pytest.mark.parametrize(
    ("kind", "path"),
    [
        ("DaskCluster", ["spec", "worker", "spec", "containers", 0, "comand"]),
        ("DaskWorkerGroup", ["spec", "worker", "spec", "containers", 0, "resource"]),
        ("DaskAutoscaler", ["spec", "maximum"]),
        ("CronJob", ["spec", "jobTemplate", "spec", "backofLimit"]),
    ],
)
def test_the_validators_catch_a_broken_manifest(kind: str, path: list[Any]) -> None:
    (doc,) = _by_kind(kind)
    broken = copy.deepcopy(doc)
    node = broken
    for key in path[:-1]:
        node = node[key]
    if path[-1] in node:
        node[path[-1]] = "not-a-number"  # a wrong type
    else:
        node[path[-1]] = "x"  # a misspelt key
    with pytest.raises((jsonschema.ValidationError, kubernetes_validate.ValidationError)):
        _validate(broken, VERSIONS[-1])


def test_one_namespace_and_the_volume_they_mount_is_defined() -> None:
    (namespace,) = _by_kind("Namespace")
    ns = namespace["metadata"]["name"]
    docs = [doc for _, doc in _documents() if doc["kind"] != "Namespace"]
    assert {doc["metadata"]["namespace"] for doc in docs} == {ns}
    claims = {doc["metadata"]["name"]: doc for doc in _by_kind("PersistentVolumeClaim")}
    for claim in claims.values():
        assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    for pod in _pod_specs():
        for volume in pod["volumes"]:
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims
        for container in pod["containers"]:
            mounted = {m["name"] for m in container.get("volumeMounts", [])}
            assert mounted <= {v["name"] for v in pod["volumes"]}


def _pod_specs() -> list[dict[str, Any]]:
    (cluster,) = _by_kind("DaskCluster")
    (cron,) = _by_kind("CronJob")
    return [
        cluster["spec"]["worker"]["spec"],
        cluster["spec"]["scheduler"]["spec"],
        *(group["spec"]["worker"]["spec"] for group in _by_kind("DaskWorkerGroup")),
        cron["spec"]["jobTemplate"]["spec"]["template"]["spec"],
    ]


def test_pods_run_as_non_root() -> None:
    for pod in _pod_specs():
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        for container in pod["containers"]:
            assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_cronjob_runs_roadnet_nightly_on_the_operator_scheduler_service() -> None:
    (cron,) = _by_kind("CronJob")
    (cluster,) = _by_kind("DaskCluster")
    spec = cron["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["timeZone"] and spec["startingDeadlineSeconds"] > 0
    job = spec["jobTemplate"]["spec"]
    assert job["activeDeadlineSeconds"] > 0 and job["backoffLimit"] >= 0
    (container,) = job["template"]["spec"]["containers"]
    command = container["command"]
    assert command[:2] == ["roadnet", "nightly"]
    options = dict(zip(command[2::2], command[3::2], strict=True))
    assert {"--inbox", "--outbox", "--scheduler"} <= set(options)
    # The operator names the scheduler Service <cluster>-scheduler, port tcp-comm.
    name, ns = cluster["metadata"]["name"], cluster["metadata"]["namespace"]
    ports = {p["name"]: p["port"] for p in cluster["spec"]["scheduler"]["service"]["ports"]}
    assert options["--scheduler"] == (
        f"tcp://{name}-scheduler.{ns}.svc.cluster.local:{ports['tcp-comm']}"
    )


def test_gpu_worker_group_and_autoscaler_belong_to_the_cluster() -> None:
    (cluster,) = _by_kind("DaskCluster")
    (gpu,) = _by_kind("DaskWorkerGroup")
    (autoscaler,) = _by_kind("DaskAutoscaler")
    name = cluster["metadata"]["name"]
    assert gpu["spec"]["cluster"] == name and autoscaler["spec"]["cluster"] == name
    assert autoscaler["spec"]["minimum"] == 0 < autoscaler["spec"]["maximum"]  # scale to zero
    (container,) = gpu["spec"]["worker"]["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == [p.name for p in MANIFESTS]


@pytest.mark.cluster
def test_scheduler_serves_the_autoscalers_adaptive_target(
    processes: Callable[..., subprocess.Popen[bytes]], free_port: Callable[[], int]
) -> None:
    """The DaskCluster's scheduler command and env, run here: the HTTP API the autoscaler
    polls answers (the operator falls back to a plain-TCP RPC otherwise, which TLS breaks)."""
    (cluster,) = _by_kind("DaskCluster")
    (container,) = cluster["spec"]["scheduler"]["spec"]["containers"]
    port, dashboard = free_port(), free_port()
    replace = {"8786": str(port), ":8787": f"127.0.0.1:{dashboard}"}
    command = [replace.get(arg, arg) for arg in container["command"]]
    command[0] = str(Path(sys.executable).with_name(command[0]))
    env = {**os.environ, **{e["name"]: e["value"] for e in container["env"]}}
    processes([*command, "--host", "127.0.0.1"], env=env, log="scheduler.log")
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{dashboard}/api/v1/adaptive_target", timeout=5
            ) as response:
                assert json.load(response) == {"workers": 0}
            break
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)

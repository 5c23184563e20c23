"""The scale-out infra, checked without a cluster or a Docker daemon: the compose file, the
Kubernetes manifests, the Prefect base job template and the Dockerfile parse, reference what
exists, and commit no secret."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
INFRA = REPO / "infra"
K8S = INFRA / "k8s"
# variables that carry credentials: each must come from the environment, never a literal
SECRET_VARS = re.compile(r"PASSWORD|SECRET|AUTH_STRING|_URI$|ACCESS_KEY|MLRA_AUDIT|CONNECTION_URL")


def _compose() -> dict[str, Any]:
    data = yaml.safe_load((INFRA / "compose.yaml").read_text())
    assert isinstance(data, dict)
    return data


def test_compose_services_reference_what_exists() -> None:
    compose = _compose()
    services = compose["services"]
    assert {"postgres", "minio", "mlflow", "prefect-server", "worker"} <= set(services)
    for name, svc in services.items():
        assert "image" in svc or "build" in svc, name
        if "build" in svc:
            context = (INFRA / svc["build"]["context"]).resolve()
            assert context == REPO, name
            assert (context / svc["build"]["dockerfile"]).is_file(), name
        for dep in svc.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown service {dep}"
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (INFRA / source).exists(), f"{name}: {source} does not exist"
            else:
                assert source in compose.get("volumes", {}), f"{name}: volume {source}"
    # the MLflow server is the image's basic-auth entrypoint, on Postgres with MinIO behind it
    mlflow = services["mlflow"]
    assert mlflow["command"] == ["mlra-mlflow-server"]
    entrypoint = (INFRA / "mlflow" / "entrypoint.sh").read_text()
    assert "--app-name basic-auth" in entrypoint and "--serve-artifacts" in entrypoint
    assert mlflow["environment"]["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql+psycopg2://")
    assert mlflow["environment"]["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    worker_env = services["worker"]["environment"]
    assert worker_env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert worker_env["PREFECT_API_URL"] == "http://prefect-server:4200/api"
    # the databases the URLs name are the ones the init script creates
    created = set(re.findall(r"CREATE DATABASE (\w+)", (INFRA / "compose/initdb.sql").read_text()))
    named = set(re.findall(r"@postgres:5432/(\w+)", (INFRA / "compose.yaml").read_text()))
    assert named and named <= created, named - created


def test_compose_takes_every_credential_from_the_environment() -> None:
    for name, svc in _compose()["services"].items():
        for key, value in (svc.get("environment") or {}).items():
            if SECRET_VARS.search(key) and "://" not in str(value):
                assert re.fullmatch(r"\$\{\w+:\?[^}]*\}", str(value)), f"{name}.{key} = {value}"
            if "://" in str(value) and "@" in str(value):  # a URL with credentials
                assert re.search(r":\$\{\w+:\?[^}]*\}@", str(value)), f"{name}.{key} = {value}"
    example = (INFRA / "env.example").read_text()
    for var in set(re.findall(r"\$\{(\w+):\?", (INFRA / "compose.yaml").read_text())):
        assert re.search(rf"^{var}=", example, re.M), f"{var} is missing from infra/env.example"
    assert ".env" in (INFRA / ".gitignore").read_text().split()


@pytest.mark.skipif(
    shutil.which("docker") is None
    or subprocess.run(["docker", "compose", "version"], capture_output=True).returncode != 0,
    reason="docker's compose plugin is not installed here (the YAML checks above still ran)",
)
def test_docker_compose_config_accepts_the_file(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text((INFRA / "env.example").read_text())
    compose = ["docker", "compose", "-f", str(INFRA / "compose.yaml"), "--env-file", str(env)]
    result = subprocess.run(
        [*compose, "config", "--quiet"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


def _manifests() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((path.name, doc))
    return docs


def test_kubernetes_manifests_are_consistent() -> None:
    docs = _manifests()
    assert docs
    defined: dict[str, set[str]] = {}
    for file, doc in docs:
        for key in ("apiVersion", "kind", "metadata"):
            assert key in doc, f"{file}: a document without {key}"
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", doc["metadata"]["name"]), file
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == "mlra", f"{file}: {doc['metadata']}"
        defined.setdefault(doc["kind"], set()).add(doc["metadata"]["name"])
    # the secrets are created from the environment (infra/README.md), never committed
    assert "Secret" not in defined
    readme = (INFRA / "README.md").read_text()
    external = {"mlra-secrets", "mlra-job-secrets"}
    for name in external:
        assert f"kubectl -n mlra create secret generic {name}" in readme, name
    text = "\n".join(p.read_text() for p in K8S.glob("*.yaml"))
    for ref in re.findall(r"configMapRef: \{name: ([\w-]+)\}", text):
        assert ref in defined["ConfigMap"], ref
    for ref in re.findall(r"secret(?:KeyRef|Ref): \{name: ([\w-]+)", text):
        assert ref in external, ref
    for ref in re.findall(r"claimName: ([\w-]+)", text):
        assert ref in defined["PersistentVolumeClaim"], ref
    for ref in re.findall(r"serviceAccountName: ([\w-]+)", text):
        assert ref in defined["ServiceAccount"], ref
    # every Service selects pods that a workload defines
    labels = set()
    for _, doc in docs:
        template = doc.get("spec", {}).get("template", {})
        labels |= {f"{k}={v}" for k, v in template.get("metadata", {}).get("labels", {}).items()}
    for _, doc in docs:
        if doc["kind"] == "Service":
            for k, v in doc["spec"]["selector"].items():
                assert f"{k}={v}" in labels, f"Service {doc['metadata']['name']} selects {k}={v}"
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    for resource in kustomization["resources"]:
        assert (K8S / resource).is_file(), resource


def test_multi_node_ddp_settings_agree() -> None:
    job = next(d for f, d in _manifests() if f == "train-ddp.yaml" and d["kind"] == "Job")
    spec = job["spec"]
    container = spec["template"]["spec"]["containers"][0]
    command = " ".join(container["args"])
    nodes = int(re.search(r"--nnodes=(\d+)", command).group(1))  # type: ignore[union-attr]
    per_node = int(re.search(r"--nproc-per-node=(\d+)", command).group(1))  # type: ignore[union-attr]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] == nodes == int(env["PL_TRAINER_NUM_NODES"])
    assert container["resources"]["limits"]["nvidia.com/gpu"] == per_node
    assert "$JOB_COMPLETION_INDEX" in command and "mlra-train-0.mlra-train" in command
    assert spec["template"]["spec"]["subdomain"] == "mlra-train"


def test_prefect_gpu_job_template_is_complete() -> None:
    template = json.loads((INFRA / "prefect" / "gpu-job-template.json").read_text())
    variables = set(template["variables"]["properties"])
    used = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", json.dumps(template["job_configuration"])))
    assert used <= variables, used - variables
    container = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"][
        "containers"
    ][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "{{ gpus }}"
    assert template["variables"]["properties"]["image"]["default"] == "mlra:cuda"


def _dockerignored(path: str, patterns: list[str]) -> bool:
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if fnmatch(path, pattern) or fnmatch(path.split("/")[0], pattern):
            ignored = not negate
    return ignored


def test_the_image_build_context_is_complete() -> None:
    dockerfile = (INFRA / "Dockerfile").read_text()
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    stages = re.findall(r"^FROM \S+ AS (\S+)", dockerfile, re.M)
    assert {"torch-cpu", "torch-cuda", "app", "worker-k8s", "mlra"} <= set(stages)
    for source in re.findall(r"^COPY (?!--from)(.+) \S+$", dockerfile, re.M):
        for item in source.split():
            assert (REPO / item).exists(), f"COPY {item}: not in the repository"
            assert not _dockerignored(item, patterns), f"COPY {item}: excluded by .dockerignore"
    # the torch pin of the image is the project's
    pinned = re.search(r"^torch==(\S+)$", (REPO / "requirements.lock").read_text(), re.M)
    assert pinned is not None
    assert dockerfile.count(f"torch=={pinned.group(1)}") == 2
    assert "ARG VARIANT=cpu" in dockerfile

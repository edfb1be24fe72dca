"""docker/: the image's pinned versions, the compose cluster and the KubeRay RayJob agree with
pyproject.toml and launch.py (parsed only: CI machines have no Docker engine)."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

from conftest import ROOT

DOCKER = ROOT / "docker"


def dockerfile() -> str:
    return (DOCKER / "Dockerfile").read_text()


def dockerfile_args() -> dict[str, str]:
    return dict(re.findall(r"^ARG (\w+)=(\S+)$", dockerfile(), re.MULTILINE))


def project_requirements() -> dict[str, Requirement]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return {req.name: req for req in map(Requirement, deps)}


def image_workdir() -> Path:
    (workdir,) = re.findall(r"^WORKDIR (\S+)$", dockerfile(), re.MULTILINE)
    return Path(workdir)


def check_launch_command(argv: list[str], workdir: Path) -> None:
    """``argv`` runs this repository's launch.py with options it accepts and a valid config."""
    import launch
    from metaray.config import load_config

    assert argv[0] == "python" and workdir / "launch.py" in (Path(argv[1]), workdir / argv[1])
    args = launch.parse_args(argv[2:])
    config = Path(args.config)
    config = config.relative_to(workdir) if config.is_absolute() else config
    load_config(ROOT / config, args.overrides)
    assert args.storage == "/runs"  # the volume every node mounts


@pytest.mark.parametrize("package, arg", [("ray", "RAY_VERSION"), ("torch", "TORCH_VERSION"),
                                          ("gymnasium", "GYMNASIUM_VERSION"), ("tensorboard", "TENSORBOARD_VERSION")])
def test_image_pins_satisfy_pyproject(package, arg):
    version = dockerfile_args()[arg]
    requirement = project_requirements()[package]
    assert requirement.specifier.contains(version), f"{package}=={version} vs pyproject {requirement}"
    assert f'"{package}' in dockerfile() and f"=${{{arg}}}" in dockerfile()


def test_image_installs_every_pyproject_dependency_with_ray_extras():
    text = dockerfile()
    assert "tomllib.load(open('pyproject.toml'" in text and "-r /tmp/requirements.txt" in text
    extras = project_requirements()["ray"].extras
    assert f'"ray[{",".join(sorted(extras))}]==${{RAY_VERSION}}"' in text
    assert dockerfile_args()["CUDA_IMAGE"].startswith("nvidia/cuda:")


def test_image_copies_the_code_and_runs_launch_py():
    copied = re.findall(r"^COPY (\S+) ", dockerfile(), re.MULTILINE)
    assert {"pyproject.toml", "platform", "envs", "configs", "launch.py"} <= set(copied)
    assert all((ROOT / path).exists() for path in copied)
    (cmd,) = re.findall(r"^CMD (\[.*\])$", dockerfile(), re.MULTILINE)
    check_launch_command(yaml.safe_load(cmd), image_workdir())
    assert not re.search(r"^ENTRYPOINT", dockerfile(), re.MULTILINE)  # Ray nodes, KubeRay run their own


def test_compose_cluster_head_workers_tensorboard():
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"ray-head", "ray-worker", "tensorboard"}
    for service in services.values():
        assert service["build"] == {"context": "..", "dockerfile": "docker/Dockerfile"}
        assert (DOCKER / service["build"]["context"] / service["build"]["dockerfile"]).resolve() == DOCKER / "Dockerfile"
        assert "runs:/runs" in service["volumes"]
    head = shlex.split(services["ray-head"]["command"])
    worker = shlex.split(services["ray-worker"]["command"])
    assert head[:3] == ["ray", "start", "--head"] and "--block" in head and "--block" in worker
    port = next(a.split("=")[1] for a in head if a.startswith("--port="))
    assert f"--address=ray-head:{port}" in worker
    assert services["ray-worker"]["deploy"]["replicas"] >= 1
    assert "127.0.0.1:8265:8265" in services["ray-head"]["ports"]
    assert "--logdir /runs" in services["tensorboard"]["command"]
    assert "runs" in compose["volumes"]


def test_rayjob_runs_launch_py_on_the_pinned_ray():
    job = yaml.safe_load((DOCKER / "rayjob.yaml").read_text())
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    spec = job["spec"]
    assert spec["rayClusterSpec"]["rayVersion"] == dockerfile_args()["RAY_VERSION"]
    assert project_requirements()["ray"].specifier.contains(spec["rayClusterSpec"]["rayVersion"])
    check_launch_command(shlex.split(spec["entrypoint"]), image_workdir())
    groups = [spec["rayClusterSpec"]["headGroupSpec"], *spec["rayClusterSpec"]["workerGroupSpecs"]]
    for group in groups:
        (container,) = group["template"]["spec"]["containers"]
        assert container["image"] == "metaray:latest"
        assert {"name": "runs", "mountPath": "/runs"} in container["volumeMounts"]


def test_rayjob_ray_containers_and_submitter_use_a_token_from_a_secret():
    """Like compose.yaml: token auth on every Ray container and on the submitter that calls the
    Jobs API, the token read from one Kubernetes Secret whose creation the file's header shows."""
    text = (DOCKER / "rayjob.yaml").read_text()
    spec = yaml.safe_load(text)["spec"]
    cluster = spec["rayClusterSpec"]
    assert "submitterPodTemplate" in spec, "the submitter needs the token too"
    templates = [cluster["headGroupSpec"]["template"], *(group["template"] for group in cluster["workerGroupSpecs"]),
                 spec["submitterPodTemplate"]]
    secrets = set()
    for template in templates:
        for container in template["spec"]["containers"]:
            env = {var["name"]: var for var in container.get("env", [])}
            assert env.get("RAY_AUTH_MODE", {}).get("value") == "token", container["name"]
            secret = env.get("RAY_AUTH_TOKEN", {}).get("valueFrom", {}).get("secretKeyRef")
            assert secret, f"{container['name']}: RAY_AUTH_TOKEN must come from a secretKeyRef"
            secrets.add((secret["name"], secret["key"]))
    assert len(secrets) == 1, secrets
    [(name, key)] = secrets
    header = "".join(line for line in text.splitlines(keepends=True) if line.startswith("#"))
    assert f"kubectl create secret generic {name} --from-literal={key}=" in header

"""Reading deploy/ the way Docker, compose and Kubernetes read it, for the deployment's tests.

The Dockerfile's instructions (continuation lines joined), the environment the
image sets, compose.yaml's services with their env files and environments
merged as compose merges them, the Kubernetes manifests as documents, and the
daemon settings each deployment gives a replica, loaded by the daemon's own
``load_settings`` so a key it would refuse fails here too.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from interlockd.config import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
#: The manifest files ``kubectl apply -k`` leaves out: templates to fill in.
TEMPLATES = ("secret.example.yaml",)


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction: its keyword (upper case) and the rest of its line."""

    keyword: str
    rest: str

    def exec_form(self) -> list[str]:
        """The JSON array of an ENTRYPOINT/CMD/RUN in exec form."""
        value = yaml.safe_load(self.rest)
        assert isinstance(value, list), f"{self.keyword} is not in exec form: {self.rest}"
        return [str(item) for item in value]


def dockerfile(path: Path = DEPLOY / "Dockerfile") -> list[Instruction]:
    """The instructions, comments dropped and ``\\``-continued lines joined."""
    instructions: list[Instruction] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        text = pending + line
        pending = ""
        keyword, _, rest = text.partition(" ")
        instructions.append(Instruction(keyword.upper(), rest.strip()))
    assert not pending, "the Dockerfile ends inside a continued line"
    return instructions


def final_stage(instructions: list[Instruction]) -> list[Instruction]:
    """The instructions of the last stage (the image that runs)."""
    starts = [i for i, ins in enumerate(instructions) if ins.keyword == "FROM"]
    return instructions[starts[-1] :]


def image_env(instructions: list[Instruction] | None = None) -> dict[str, str]:
    """The environment the image's final stage sets (``ENV K=V ...`` instructions)."""
    env: dict[str, str] = {}
    for ins in final_stage(instructions or dockerfile()):
        if ins.keyword == "ENV":
            for word in shlex.split(ins.rest):
                name, sep, value = word.partition("=")
                assert sep, f"ENV {ins.rest!r}: use the NAME=value form"
                env[name] = value
    return env


def copy_sources(instructions: list[Instruction]) -> list[str]:
    """What every COPY/ADD takes from the build context (not ``--from`` another stage)."""
    sources: list[str] = []
    for ins in instructions:
        if ins.keyword not in ("COPY", "ADD"):
            continue
        words = shlex.split(ins.rest)
        flags = [w for w in words if w.startswith("--")]
        if any(flag.startswith("--from=") for flag in flags):
            continue
        paths = [w for w in words if not w.startswith("--")]
        assert len(paths) >= 2, f"{ins.keyword} {ins.rest}: a source and a destination"
        sources += paths[:-1]
    return sources


def read_env_file(path: Path) -> dict[str, str]:
    """A compose env file: ``NAME=value`` lines, ``#`` comments and blank lines skipped."""
    env: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        assert sep, f"{path.name}: {line!r} is not NAME=value"
        env[name.strip()] = value
    return env


def compose() -> dict[str, Any]:
    """compose.yaml, anchors and ``<<`` merges resolved."""
    data = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert isinstance(data, dict)
    return data


def interlockd_services(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The compose services that run the daemon's image (built from deploy/Dockerfile)."""
    return {
        name: service
        for name, service in data["services"].items()
        if (service.get("build") or {}).get("dockerfile") == "deploy/Dockerfile"
    }


def example_of(env_file: str) -> Path:
    """The committed template of an env file compose reads (``<file>.example``)."""
    return DEPLOY / f"{env_file}.example"


def service_env(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as its container sees it: the image's ENV, then the env
    files (their committed templates) in order, then ``environment``."""
    env = dict(image_env()) if service.get("build") else {}
    files = service.get("env_file") or []
    for entry in [files] if isinstance(files, str) else files:
        name = entry if isinstance(entry, str) else entry["path"]
        env |= read_env_file(example_of(name))
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    env |= {name: str(value) for name, value in environment.items()}
    return env


def mounted_source(service: dict[str, Any], target: str) -> Path:
    """The host file a service's bind mount puts at ``target`` (relative to deploy/)."""
    for volume in service.get("volumes", []):
        source, _, rest = volume.partition(":")
        if rest.split(":", 1)[0] == target:
            return (DEPLOY / str(source)).resolve()
    raise AssertionError(f"nothing is mounted at {target}")


def seconds(duration: str | int | float) -> float:
    """A compose duration (``45s``, ``1m30s``, or a number of seconds)."""
    if isinstance(duration, int | float):
        return float(duration)
    parts = re.fullmatch(r"(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?", duration.strip())
    assert parts, f"duration {duration!r}"
    assert any(parts.groups()), f"duration {duration!r}"
    minutes, secs = parts.groups()
    return 60 * float(minutes or 0) + float(secs or 0)


def manifest_files() -> list[Path]:
    """Every Kubernetes manifest, the Secret template included (not the kustomization)."""
    return sorted(p for p in KUBERNETES.glob("*.yaml") if p.name != "kustomization.yaml")


def documents(path: Path) -> list[dict[str, Any]]:
    """The resources of one manifest file."""
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def resources() -> dict[tuple[str, str], dict[str, Any]]:
    """Every resource of the manifests by (kind, name)."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for path in manifest_files():
        for doc in documents(path):
            key = (doc["kind"], doc["metadata"]["name"])
            assert key not in found, f"{key} is declared twice"
            found[key] = doc
    return found


def the(kind: str) -> dict[str, Any]:
    """The one resource of ``kind`` (Deployment, PodDisruptionBudget, ConfigMap, Secret)."""
    matches = [doc for (k, _), doc in resources().items() if k == kind]
    assert len(matches) == 1, f"expected one {kind}, found {len(matches)}"
    return matches[0]


def container() -> dict[str, Any]:
    """The Deployment's interlockd container."""
    containers = the("Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    result: dict[str, Any] = containers[0]
    return result


def deployment_settings(scratch: Path) -> Settings:
    """The settings a replica of the Deployment runs with: the image's ENV, the container's
    env (Secret values from the template, ConfigMap files written under ``scratch``)."""
    secret = the("Secret")["stringData"]
    configmap = the("ConfigMap")["data"]
    env = image_env()
    for var in container().get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        elif "fieldRef" in var["valueFrom"]:
            # The downward API: a pod's own fields (its IP), stood in for here.
            assert var["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP", var
            env[var["name"]] = "10.0.0.17"
        else:
            ref = var["valueFrom"]["secretKeyRef"]
            assert ref["name"] == the("Secret")["metadata"]["name"], var
            env[var["name"]] = secret[ref["key"]]
    mounts = {m["name"]: m["mountPath"] for m in container().get("volumeMounts", [])}
    config = env.pop("INTERLOCK_CONFIG", None)
    config_file = None
    if config is not None:
        # The ConfigMap's key under its mount path: write that file where we can.
        directory, _, key = config.rpartition("/")
        volumes = the("Deployment")["spec"]["template"]["spec"]["volumes"]
        mounted = {v["name"] for v in volumes if "configMap" in v}
        assert any(mounts.get(name) == directory for name in mounted), (
            f"INTERLOCK_CONFIG {config} is not in a mounted ConfigMap"
        )
        config_file = scratch / key
        config_file.write_text(configmap[key])
    return load_settings(config_file, env=env)


def port_of(address: str) -> int:
    """The port of ``host:port``."""
    return int(address.rsplit(":", 1)[1])

"""deploy/kubernetes: the manifests validate against the Kubernetes JSON schemas (strict:
an unknown field is an error) for the versions named below, offline, with the schemas
kubernetes-validate bundles; and they agree with each other, with the image and with
deploy/interlock.toml."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from interlockd.config import load_settings
from tests.deploy.files import (
    DEPLOY,
    KUBERNETES,
    TEMPLATES,
    container,
    deployment_settings,
    dockerfile,
    documents,
    final_stage,
    image_env,
    manifest_files,
    port_of,
    resources,
    the,
)

#: The oldest release validated (native gRPC probes are GA since 1.27; 1.30 is the
#: oldest schema set kept here) and the newest the pinned validator bundles.
KUBERNETES_VERSIONS = ("1.30", "1.37")


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: p.name)
def test_every_manifest_validates_against_the_kubernetes_schemas(path: Path, version: str) -> None:
    """Each resource of each manifest (the Secret template too) is valid for the Kubernetes
    version, unknown fields refused."""
    docs = documents(path)
    assert docs
    for doc in docs:
        assert kubernetes_validate.validate(doc, version, strict=True) == version


def test_the_validator_refuses_a_misspelt_field() -> None:
    """The schemas are really applied: a Deployment with a misspelt field fails."""
    deployment = copy.deepcopy(the("Deployment"))
    spec = deployment["spec"]["template"]["spec"]
    spec["terminationGracePeriodSecond"] = spec.pop("terminationGracePeriodSeconds")
    with pytest.raises(kubernetes_validate.ValidationError, match="terminationGracePeriodSecond"):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)


def test_kustomization_applies_every_manifest_but_the_templates() -> None:
    """`kubectl apply -k deploy/kubernetes` applies every manifest except the Secret
    template, which is never applied with its placeholders."""
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    applied = sorted(kustomization["resources"])
    assert applied == sorted(p.name for p in manifest_files() if p.name not in TEMPLATES)


def test_selectors_ports_and_references_line_up() -> None:
    """The Services and the budget select the Deployment's pods; the Services target its
    named ports; every Secret key and ConfigMap it reads exists; two or more replicas,
    one of which a disruption may take."""
    deployment = the("Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert deployment["spec"]["replicas"] >= 2
    pdb = the("PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["maxUnavailable"] < deployment["spec"]["replicas"]
    ports = {p["name"]: p["containerPort"] for p in container()["ports"]}
    services = [doc for (kind, _), doc in resources().items() if kind == "Service"]
    assert {s["metadata"]["name"] for s in services} == {"interlockd", "interlockd-headless"}
    for service in services:
        assert service["spec"]["selector"].items() <= labels.items()
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports
            assert port["port"] == ports[port["targetPort"]]
    headless = next(s for s in services if s["metadata"]["name"] == "interlockd-headless")
    assert headless["spec"]["clusterIP"] == "None"
    secret = the("Secret")
    for var in container()["env"]:
        if "secretKeyRef" in var.get("valueFrom", {}):
            ref = var["valueFrom"]["secretKeyRef"]
            assert (ref["name"], ref["key"] in secret["stringData"]) == (
                secret["metadata"]["name"],
                True,
            )
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    configmaps = [v["configMap"]["name"] for v in volumes if "configMap" in v]
    assert configmaps == [the("ConfigMap")["metadata"]["name"]]


def test_the_configmap_holds_deploy_interlock_toml() -> None:
    """The ConfigMap's interlock.toml is deploy/interlock.toml, as compose mounts it."""
    data = the("ConfigMap")["data"]
    assert data == {"interlock.toml": (DEPLOY / "interlock.toml").read_text()}


def test_a_replica_of_the_deployment_loads_its_settings(tmp_path: Path) -> None:
    """The image's environment, the container's env (the Secret template's values) and the
    ConfigMap's file are a configuration the daemon accepts: a PostgreSQL store and a given
    master key, both from the Secret, listening on the ports the probes and Services use."""
    settings = deployment_settings(tmp_path)
    assert settings.store_url is not None
    assert settings.store_url.get_secret_value().startswith("postgresql://")
    assert settings.keys.master_key is not None
    ports = {p["name"]: p["containerPort"] for p in container()["ports"]}
    assert port_of(settings.listen) == ports["grpc"]
    assert port_of(settings.http_listen) == ports["http"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container()[probe]["grpc"] == {"port": ports["grpc"]}, probe
    secret_env = {
        var["name"] for var in container()["env"] if "secretKeyRef" in var.get("valueFrom", {})
    }
    assert {"INTERLOCK_STORE_URL", "INTERLOCK_KEYS__MASTER_KEY"} <= secret_env


def test_pods_run_unprivileged_on_a_read_only_root_with_data_dir_writable() -> None:
    """The pod runs as the image's non-root user with a read-only root filesystem, no
    privilege escalation and no capabilities; data_dir and /tmp are emptyDir volumes;
    requests and a memory limit are set; no service links reach the environment."""
    spec = the("Deployment")["spec"]["template"]["spec"]
    user = next(ins for ins in final_stage(dockerfile()) if ins.keyword == "USER").rest
    uid, _, gid = user.partition(":")
    pod = spec["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert (pod["runAsUser"], pod["runAsGroup"], pod["fsGroup"]) == (int(uid), int(gid), int(gid))
    assert spec["enableServiceLinks"] is False
    assert spec["automountServiceAccountToken"] is False
    security = container()["securityContext"]
    assert security == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    empty_dirs = {v["name"] for v in spec["volumes"] if "emptyDir" in v}
    mounts = {m["mountPath"]: m["name"] for m in container()["volumeMounts"]}
    data_dir = load_settings(None, env=image_env()).data_dir
    assert mounts[str(data_dir)] in empty_dirs
    assert mounts["/tmp"] in empty_dirs
    resources_: dict[str, Any] = container()["resources"]
    assert {"cpu", "memory"} <= resources_["requests"].keys()
    assert "memory" in resources_["limits"]

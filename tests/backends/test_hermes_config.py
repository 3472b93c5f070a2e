"""The ``hermes`` provider in the daemon's configuration and how its backend is built."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from interlockd.backends.hermes.backend import HermesBackend
from interlockd.backends.kinds import build_backend
from interlockd.backends.local import LocalBackend, LocalModelServer
from interlockd.backends.registry import BackendDeps, BackendRegistry
from interlockd.config import ConfigError, load_settings
from interlockd.daemon import register_backends
from interlockd.vocabulary import RuntimeContext

CONTEXT = RuntimeContext(
    key="cs_1", model="m", api_key="k" * 32, mcp_url="http://127.0.0.1:7601/mcp", mcp_token="t"
)


def install(root: Path) -> Path:
    path = root / ".runtimes" / "hermes" / "bin" / "hermes"
    path.parent.mkdir(parents=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    return tmp_path


def test_hermes_is_a_default_provider_only_when_installed(workdir: Path) -> None:
    """Settings get a `hermes` provider on the local model exactly when its runtime is found."""
    assert "hermes" not in load_settings(env={}).providers
    install(workdir)
    hermes = load_settings(env={}).providers["hermes"]
    assert (hermes.kind, hermes.default_model, hermes.base_url) == ("hermes", "smollm2-135m", "")


async def test_a_configured_hermes_builds_its_backend(workdir: Path) -> None:
    """kind = "hermes" settings become a HermesBackend with the model, key and host given."""
    executable = install(workdir)
    settings = load_settings(
        env={
            "INTERLOCK_PROVIDERS__NOUS__KIND": "hermes",
            "INTERLOCK_PROVIDERS__NOUS__BASE_URL": "http://10.0.0.5:8000/v1",
            "INTERLOCK_PROVIDERS__NOUS__API_KEY": "sk-model",
            "INTERLOCK_PROVIDERS__NOUS__LISTEN_HOST": "0.0.0.0",
        }
    )
    deps = BackendDeps(name="nous", data_dir=workdir, backends=BackendRegistry())
    backend = build_backend(settings.providers["nous"], deps)
    try:
        assert isinstance(backend, HermesBackend)
        assert (backend.provider, backend.runtime, backend.keeps_sessions) == ("nous", True, True)
        spec = backend.session_spec(CONTEXT)
        assert spec.command[0] == str(executable.resolve())
        assert spec.env["API_SERVER_HOST"] == "0.0.0.0"
        model = json.loads(spec.files["hermes/config.yaml"])["model"]
        assert (model["base_url"], model["api_key"]) == ("http://10.0.0.5:8000/v1", "sk-model")
    finally:
        await backend.aclose()


async def test_the_default_hermes_uses_the_local_providers_model_server(workdir: Path) -> None:
    """Without a base_url Hermes is pointed at the local provider's model server."""
    install(workdir)
    settings = load_settings(env={})
    registry = BackendRegistry()
    server = LocalModelServer(workdir / "model")
    registry.register(LocalBackend(server))
    deps = BackendDeps(name="hermes", data_dir=workdir, backends=registry)
    backend = build_backend(settings.providers["hermes"], deps)
    assert isinstance(backend, HermesBackend)

    async def started() -> str:
        return "http://127.0.0.1:5555"

    server.ensure_started = started  # type: ignore[method-assign]
    try:
        await backend.prepare_runtime()
        model = json.loads(backend.session_spec(CONTEXT).files["hermes/config.yaml"])["model"]
        assert model["base_url"] == "http://127.0.0.1:5555/v1"
    finally:
        await backend.aclose()
        await registry.aclose()


def test_a_missing_executable_fails_at_start(workdir: Path) -> None:
    """A hermes provider whose executable cannot be found is a configuration error."""
    settings = load_settings(env={"INTERLOCK_PROVIDERS__HERMES__KIND": "hermes"})
    with pytest.raises(ConfigError, match="make"):
        register_backends(settings, BackendRegistry())

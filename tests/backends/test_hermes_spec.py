"""The compute session spec the Hermes backend renders, and finding the executable."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from interlockd.backends.hermes.backend import HermesBackend
from interlockd.backends.hermes.config import (
    MIN_CONTEXT_LENGTH,
    HermesSettings,
    find_executable,
    render_spec,
)
from interlockd.vocabulary import RuntimeContext

CONTEXT = RuntimeContext(
    key="sbx-1:user-1:hermes",
    model="hermes-4-70b",
    api_key="runtime-key-0123456789abcdef",
    mcp_url="http://127.0.0.1:7601/mcp",
    mcp_token="mcp-token-abc",
    labels={"user_id": "user-1", "sandbox_id": "sbx-1"},
)
SETTINGS = HermesSettings(
    executable="/opt/hermes/bin/hermes", model_base_url="http://10.0.0.5:8000/v1"
)


def config_of(settings: HermesSettings = SETTINGS, url: str = "http://m/v1") -> dict[str, object]:
    spec = render_spec(CONTEXT, settings, url)
    loaded: dict[str, object] = json.loads(spec.files["hermes/config.yaml"])
    return loaded


def test_spec_runs_the_gateway_with_the_api_server_configured() -> None:
    """The spec runs `hermes gateway run` with the API server's key, {host} and {port}."""
    spec = render_spec(CONTEXT, SETTINGS, "http://m/v1")
    assert list(spec.command) == ["/opt/hermes/bin/hermes", "gateway", "run"]
    assert dict(spec.env) == {
        "API_SERVER_ENABLED": "true",
        "API_SERVER_HOST": "{host}",
        "API_SERVER_KEY": CONTEXT.api_key,
        "API_SERVER_PORT": "{port}",
        "HERMES_HOME": "{state_dir}/hermes",
    }
    assert spec.key == CONTEXT.key
    assert spec.health_path == "/health"
    assert dict(spec.labels) == dict(CONTEXT.labels)
    assert list(spec.files) == ["hermes/config.yaml"]


def test_config_names_the_model_and_only_the_daemons_mcp_tools() -> None:
    """config.yaml points Hermes at the model and the MCP endpoint, with no tools of its own."""
    config = config_of()
    assert config["model"] == {
        "provider": "custom",
        "base_url": "http://m/v1",
        "default": "hermes-4-70b",
        "api_key": "no-key",
        "context_length": MIN_CONTEXT_LENGTH,
        "max_tokens": 4096,
    }
    assert config["mcp_servers"] == {
        "interlock": {
            "url": "http://127.0.0.1:7601/mcp",
            "headers": {"Authorization": "Bearer mcp-token-abc"},
        }
    }
    assert config["platform_toolsets"] == {"api_server": ["interlock"]}
    assert config["security"] == {"tirith_enabled": False}


def test_rendering_is_deterministic() -> None:
    """The same context renders equal specs with identical bytes, keys sorted."""
    one, two = render_spec(CONTEXT, SETTINGS, "u"), render_spec(CONTEXT, SETTINGS, "u")
    assert one == two
    text = one.files["hermes/config.yaml"].decode()
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"


def test_host_key_and_window_follow_the_settings() -> None:
    """listen_host, the model key and a window above Hermes' floor come from the settings."""
    settings = HermesSettings(
        executable="/h",
        model_api_key="sk-model",
        listen_host="0.0.0.0",
        context_length=200_000,
        max_output_tokens=512,
    )
    spec = render_spec(CONTEXT, settings, "u")
    assert spec.env["API_SERVER_HOST"] == "0.0.0.0"
    model = config_of(settings)["model"]
    assert isinstance(model, dict)
    assert (model["api_key"], model["context_length"], model["max_tokens"]) == (
        "sk-model",
        200_000,
        512,
    )


def test_a_short_runtime_key_is_refused() -> None:
    """A key Hermes would refuse to start with fails when the spec is rendered."""
    short = RuntimeContext(key="k", model="m", api_key="short", mcp_url="u", mcp_token="t")
    with pytest.raises(ValueError, match="16"):
        render_spec(short, SETTINGS, "u")


async def test_the_local_model_url_is_resolved_before_the_spec() -> None:
    """Without a model URL the backend asks the local model server for it in prepare_runtime."""
    asked: list[bool] = []

    async def local_model() -> str:
        asked.append(True)
        return "http://127.0.0.1:4321"

    backend = HermesBackend(HermesSettings(executable="/h"), local_model=local_model)
    try:
        with pytest.raises(RuntimeError, match="prepare_runtime"):
            backend.session_spec(CONTEXT)
        await backend.prepare_runtime()
        config = json.loads(backend.session_spec(CONTEXT).files["hermes/config.yaml"])
        assert config["model"]["base_url"] == "http://127.0.0.1:4321/v1"
        assert asked == [True]
    finally:
        await backend.aclose()


def test_a_backend_needs_a_model() -> None:
    """A backend with neither a model URL nor the local model server is refused."""
    with pytest.raises(ValueError, match="base_url"):
        HermesBackend(HermesSettings(executable="/h"))


def executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_find_executable_prefers_configured_then_runtimes_then_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A configured path wins, then .runtimes/hermes under the working directory, then PATH."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    assert find_executable() is None
    on_path = executable(tmp_path / "bin" / "hermes")
    assert find_executable() == str(on_path)
    local = executable(tmp_path / ".runtimes" / "hermes" / "bin" / "hermes")
    assert find_executable() == str(local)
    configured = executable(tmp_path / "opt" / "hermes")
    assert find_executable(str(configured)) == str(configured)
    assert find_executable(str(tmp_path / "missing" / "hermes")) is None
    assert find_executable("hermes") == str(on_path)

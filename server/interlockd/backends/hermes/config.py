"""What a Hermes compute session runs: ``hermes gateway run`` and the files it reads.

Owns the rendering of a :class:`~interlockd.compute.base.SessionSpec` from a
:class:`~interlockd.backends.base.RuntimeContext` and the backend's settings,
and finding the ``hermes`` executable. It renders, it never starts anything.

The session (hermes-agent 0.19, read from its source):

- command ``<hermes> gateway run``; ``HERMES_HOME`` is ``{state_dir}/hermes``,
  where it keeps ``state.db`` (its sessions), logs and caches.
- the OpenAI-compatible API server is configured from the environment:
  ``API_SERVER_ENABLED=true``, ``API_SERVER_KEY`` (the compute session's key;
  Hermes refuses to start with one shorter than 16 characters or a
  placeholder), ``API_SERVER_HOST`` and ``API_SERVER_PORT`` (``{host}`` and
  ``{port}`` unless configured: the compute provider fills them in, 127.0.0.1
  for a local process, an outside address where it routes from outside). ``GET /health`` answers
  without a key.
- ``hermes/config.yaml`` (JSON, which YAML reads as is: sorted keys, so the
  same context always gives the same bytes):

  - ``model``: ``provider: custom`` with the OpenAI-compatible ``base_url``,
    ``default`` (the run's model), ``api_key``, ``context_length`` and
    ``max_tokens``. ``context_length`` is never below Hermes' floor of 64,000
    tokens (it fails every turn under it), whatever the model's real window:
    naming it also spares the lookup of model metadata at openrouter.ai.
  - ``mcp_servers.interlock``: the daemon's MCP endpoint with
    ``Authorization: Bearer <the session's MCP token>``; its tools reach the
    model as ``mcp__interlock__<tool>``.
  - ``platform_toolsets.api_server: [interlock]``: the API server's agent gets
    the MCP tools of that server and none of Hermes' own (terminal, files,
    web, browser, code execution, memory, skills, delegation, cron…).
  - quiet and offline: no per-session memory or user profile, no title
    generation (an extra model call per session), no curator, no remote model
    catalog, no onboarding offer, no environment probe (it runs programs to
    describe the host), no tirith (it downloads a scanner binary from GitHub
    at start), logs at WARNING.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson

from interlockd.vocabulary import RuntimeContext, SessionSpec

#: Where ``make`` installs hermes-agent, relative to the daemon's working directory.
DEFAULT_EXECUTABLE: Final = Path(".runtimes/hermes/bin/hermes")
#: The name of the daemon's MCP server in Hermes' configuration (and in its tool names).
MCP_SERVER: Final = "interlock"
#: Hermes refuses a model whose context window is below this (agent/model_metadata.py).
MIN_CONTEXT_LENGTH: Final = 64_000
#: Hermes refuses an API server key shorter than this.
MIN_KEY_LENGTH: Final = 16
HOME_DIR: Final = "hermes"  # HERMES_HOME, relative to the session's state directory
DEFAULT_PORT: Final = 8642  # Hermes' own default, the port inside a session's machine


def find_executable(configured: str = "") -> str | None:
    """The absolute path of the ``hermes`` executable, or None when there is none.

    ``configured`` (a path, or a name looked up on ``PATH``) wins; else
    ``.runtimes/hermes/bin/hermes`` under the working directory if present;
    else ``hermes`` on ``PATH``. The path is made absolute because a local
    compute session runs in a directory of its own.
    """
    if configured:
        if os.sep in configured:
            path = Path(configured).expanduser()
            return str(path.resolve()) if _runnable(path) else None
        return shutil.which(configured)
    if _runnable(DEFAULT_EXECUTABLE):
        return str(DEFAULT_EXECUTABLE.resolve())
    return shutil.which("hermes")


def _runnable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


@dataclass(frozen=True, slots=True)
class HermesSettings:
    """How the backend starts Hermes and which model Hermes calls.

    ``executable`` is an absolute path (see :func:`find_executable`).
    ``model_base_url`` is the OpenAI-compatible root the model is served at,
    ending in ``/v1``; empty means the daemon's local model server (the
    backend resolves it). ``listen_host`` is the API server's bind address
    inside the session (``{host}``: the compute provider's). ``context_length``
    is what Hermes is told about the model's window (raised to its floor);
    ``max_output_tokens`` caps each of its model calls.
    """

    executable: str
    model_base_url: str = ""
    model_api_key: str = ""
    listen_host: str = "{host}"
    port: int = DEFAULT_PORT
    context_length: int = MIN_CONTEXT_LENGTH
    max_output_tokens: int = 4096


def render_spec(
    context: RuntimeContext, settings: HermesSettings, model_base_url: str
) -> SessionSpec:
    """The compute session running Hermes for ``context``, its model at ``model_base_url``.

    Pure: the same arguments give an equal spec with the same bytes in every
    file. ValueError when the context's API key is too short for Hermes.
    """
    if len(context.api_key) < MIN_KEY_LENGTH:
        raise ValueError(
            f"the runtime API key must have at least {MIN_KEY_LENGTH} characters "
            "(hermes-agent refuses to start with a shorter one)"
        )
    env = {
        "API_SERVER_ENABLED": "true",
        "API_SERVER_HOST": settings.listen_host,
        "API_SERVER_KEY": context.api_key,
        "API_SERVER_PORT": "{port}",
        "HERMES_HOME": "{state_dir}/" + HOME_DIR,
    }
    return SessionSpec(
        key=context.key,
        command=(settings.executable, "gateway", "run"),
        port=settings.port,
        env=env,
        files={f"{HOME_DIR}/config.yaml": render_config(context, settings, model_base_url)},
        labels=dict(sorted(context.labels.items())),
        health_path="/health",
    )


def render_config(context: RuntimeContext, settings: HermesSettings, model_base_url: str) -> bytes:
    """``$HERMES_HOME/config.yaml`` (as JSON, a subset of YAML) for ``context``."""
    config: dict[str, Any] = {
        "model": {
            "provider": "custom",
            "base_url": model_base_url,
            "default": context.model,
            # The custom provider needs a key even when the server takes none.
            "api_key": settings.model_api_key or "no-key",
            "context_length": max(settings.context_length, MIN_CONTEXT_LENGTH),
            "max_tokens": settings.max_output_tokens,
        },
        "mcp_servers": {
            MCP_SERVER: {
                "url": context.mcp_url,
                "headers": {"Authorization": f"Bearer {context.mcp_token}"},
            }
        },
        "platform_toolsets": {"api_server": [MCP_SERVER]},
        "agent": {"environment_probe": False},
        "memory": {"memory_enabled": False, "user_profile_enabled": False},
        "auxiliary": {"title_generation": {"enabled": False}},
        "curator": {"enabled": False},
        "model_catalog": {"enabled": False},
        "onboarding": {"profile_build": "off"},
        "security": {"tirith_enabled": False},
        "logging": {"level": "WARNING"},
    }
    return orjson.dumps(config, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2) + b"\n"

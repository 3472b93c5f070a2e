"""What the Daytona provider knows of a sandbox without asking Daytona (no I/O).

The names and labels it gives a sandbox, the env file and the command that
launch the runtime, the process sessions that run it (their names carry the
port), and how a sandbox's state reads as a session status.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

# The sandbox objects carry the async API client's enum (the package exports the sync one).
from daytona_api_client_async import SandboxState

from interlockd.compute import remote
from interlockd.compute.base import ComputeSession, SessionStatus
from interlockd.vocabulary import SessionSpec

if TYPE_CHECKING:
    from daytona import AsyncSandbox

#: Header carrying a private sandbox's preview token.
PREVIEW_TOKEN_HEADER = "x-daytona-preview-token"
#: Labels the provider sets on every sandbox (besides the spec's).
KEY_LABEL = "interlock.key"
MANAGED_LABEL = "interlock.managed"
#: The SDK labels every sandbox with its code-run language; not one of ours.
_SDK_LABELS = frozenset({"code-toolbox-language", KEY_LABEL, MANAGED_LABEL})
#: Where the runtime's environment is written, relative to the sandbox's work dir.
ENV_FILE = ".interlock/runtime.env"
#: Process sessions running the runtime: ``interlock-runtime-<port>-<digest>``.
RUNTIME_SESSION_PREFIX = "interlock-runtime-"
_RUNTIME_SESSION = re.compile(rf"{RUNTIME_SESSION_PREFIX}(?P<port>\d+)-[0-9a-f]+")

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_STATUS: dict[SandboxState, SessionStatus] = {
    SandboxState.STARTED: "running",
    SandboxState.STOPPED: "suspended",
    SandboxState.STOPPING: "suspended",
    SandboxState.PAUSED: "suspended",
    SandboxState.PAUSING: "suspended",
    SandboxState.ARCHIVED: "archived",
    SandboxState.ARCHIVING: "archived",
    SandboxState.DESTROYED: "destroyed",
    SandboxState.DESTROYING: "destroyed",
    SandboxState.ERROR: "failed",
    SandboxState.BUILD_FAILED: "failed",
}
# States that end by themselves: wait them out before deciding anything.
TRANSITIONAL = frozenset(
    {
        SandboxState.CREATING,
        SandboxState.STARTING,
        SandboxState.RESTORING,
        SandboxState.STOPPING,
        SandboxState.ARCHIVING,
        SandboxState.DESTROYING,
        SandboxState.PENDING_BUILD,
        SandboxState.BUILDING_SNAPSHOT,
        SandboxState.PULLING_SNAPSHOT,
        SandboxState.RESIZING,
        SandboxState.SNAPSHOTTING,
        SandboxState.FORKING,
        SandboxState.PAUSING,
        SandboxState.RESUMING,
    }
)
FAILED = frozenset({SandboxState.ERROR, SandboxState.BUILD_FAILED})


def session_name(key: str, prefix: str = "interlock-") -> str:
    """The sandbox name for a session key: readable, unique, at most 63 characters."""
    return remote.session_name(key, prefix, 40)


def env_script(env: Mapping[str, str]) -> bytes:
    """A POSIX shell script exporting ``env`` (names checked, values quoted)."""
    lines = []
    for name, value in sorted(env.items()):
        if not _ENV_NAME.fullmatch(name):
            raise ValueError(f"environment variable name {name!r} is not a shell identifier")
        lines.append(f"export {name}={shlex.quote(value)}\n")
    return "".join(lines).encode()


def runtime_session(spec: SessionSpec, env: Mapping[str, str]) -> str:
    """The process session running ``spec``'s runtime with ``env``."""
    return f"{RUNTIME_SESSION_PREFIX}{spec.port}-{remote.spec_digest(spec, env)}"


def runtime_port(session_ids: Iterable[str]) -> int | None:
    """The runtime's port, read from the name of the process session running it."""
    for session_id in session_ids:
        match = _RUNTIME_SESSION.fullmatch(session_id)
        if match:
            return int(match["port"])
    return None


def launch_command(workdir: str, command: Sequence[str]) -> str:
    """The shell command starting the runtime: from the uploads' directory, its env file
    sourced (so secrets stay out of the command line), then ``command`` in its place."""
    launch = (
        f"cd {shlex.quote(workdir)} && chmod 600 {ENV_FILE} && . ./{ENV_FILE} "
        f"&& exec {shlex.join(command)}"
    )
    return f"sh -c {shlex.quote(launch)}"


def session_of(provider: str, sandbox: AsyncSandbox) -> ComputeSession:
    """The session a sandbox is (its state read as a status, the SDK's labels left out)."""
    state = sandbox.state
    status: SessionStatus = "creating" if state is None else _STATUS.get(state, "creating")
    labels = {k: v for k, v in (sandbox.labels or {}).items() if k not in _SDK_LABELS}
    return ComputeSession(
        provider=provider,
        external_id=sandbox.id,
        key=(sandbox.labels or {}).get(KEY_LABEL, ""),
        status=status,
        labels=labels,
        region=sandbox.target or "",
    )


def state_of(sandbox: AsyncSandbox) -> str:
    state = sandbox.state
    return "unknown" if state is None else str(state.value)

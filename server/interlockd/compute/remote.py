"""What the providers whose sessions run on a hosted service share (Daytona, Fly.io Sprites).

Owns the rules both apply the same way: a session's name on the service (from
its key), the digest of what a runtime was started from (a change means
starting it again), the check of a spec before anything is created, and the
short texts an operator reads in an error (a failure's detail, a runtime's last
output; the local provider's log tail reads the same). Nothing here calls a service.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from pathlib import PurePosixPath

from interlockd.compute.base import ComputeError
from interlockd.vocabulary import SessionSpec

_MAX_DETAIL = 300
_TAIL_LINES = 20
_TAIL_BYTES = 4096


def session_name(key: str, prefix: str, slug_length: int) -> str:
    """The service's name for a session key: readable (a slug of at most ``slug_length``),
    unique (a digest of the key)."""
    slug = re.sub(r"[^a-z0-9]+", "-", key.lower()).strip("-")[:slug_length].strip("-")
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    return f"{prefix}{slug}-{digest}" if slug else f"{prefix}{digest}"


def spec_digest(spec: SessionSpec, env: Mapping[str, str], *more: str) -> str:
    """What the runtime is started from (and ``more`` of where), hashed to 16 hex digits."""
    h = hashlib.sha256()
    for part in (*spec.command, "\0", str(spec.port), "\0", spec.health_path, *more):
        h.update(part.encode() + b"\0")
    for name, value in sorted(env.items()):
        h.update(f"{name}={value}".encode() + b"\0")
    for path, content in sorted(spec.files.items()):
        h.update(path.encode() + b"\0" + hashlib.sha256(content).digest())
    return h.hexdigest()[:16]


def check_spec(provider: str, spec: SessionSpec, files_inside: str) -> None:
    """Refuse a spec no session could run, before anything is created: a key, a
    command, a TCP port, an absolute health path, files at relative paths (inside
    ``files_inside``, named in the error)."""
    if not spec.key:
        raise ComputeError(provider, "the session spec has no key")
    if not spec.command:
        raise ComputeError(provider, f"session {spec.key}: the spec has no command")
    if not 0 < spec.port < 65536:
        raise ComputeError(provider, f"session {spec.key}: port {spec.port} is not a TCP port")
    if not spec.health_path.startswith("/"):
        raise ComputeError(
            provider,
            f"session {spec.key}: health_path must start with '/', not {spec.health_path!r}",
        )
    for relative in spec.files:
        parts = PurePosixPath(relative).parts
        if not parts or parts[0] == "/" or ".." in parts:
            raise ComputeError(
                provider,
                f"session {spec.key}: file {relative!r}: give a relative path inside "
                f"{files_inside}",
            )


def short(text: str) -> str:
    """``text`` on one line, cut to a length an error message can carry."""
    text = " ".join(text.split())
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 1] + "…"


def output_tail(output: str) -> str:
    """The end of a runtime's output, for an operator reading the error."""
    lines = [line for line in output[-_TAIL_BYTES:].splitlines() if line.strip()][-_TAIL_LINES:]
    return "; its last output:\n" + "\n".join(lines) if lines else "; it wrote nothing"

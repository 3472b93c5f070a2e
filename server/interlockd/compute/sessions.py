"""Pure helpers of the compute scheduler: a spec's fingerprint, a session's tags and
snapshot, provider failures as ComputeError. No I/O, no state."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import orjson

from interlockd.compute.base import ComputeError, ComputeSession
from interlockd.compute.placement import PlacementRequest
from interlockd.store.base import ComputeSessionRecord
from interlockd.vocabulary import SessionSpec


def as_compute_error(name: str, exc: Exception) -> ComputeError:
    """``exc`` as a ComputeError of the provider configured as ``name``."""
    if isinstance(exc, ComputeError):
        if exc.provider == name:
            return exc
        return ComputeError(name, exc.message.removeprefix(f"compute provider {exc.provider}: "))
    return ComputeError(name, repr(exc))


def fingerprint(spec: SessionSpec) -> str:
    document = {
        "command": list(spec.command),
        "port": spec.port,
        "env": dict(spec.env),
        "files": {k: hashlib.sha256(v).hexdigest() for k, v in spec.files.items()},
        "health_path": spec.health_path,
        "size": spec.size,
    }
    return hashlib.sha256(orjson.dumps(document, option=orjson.OPT_SORT_KEYS)).hexdigest()


def tags(req: PlacementRequest, run_id: str) -> dict[str, str]:
    return {
        "user_id": req.end_user_id,
        "sandbox_id": req.sandbox_id,
        "agent_id": req.agent_id,
        "run_id": run_id,
        "model": req.model,
    }


def snapshot(record: ComputeSessionRecord) -> ComputeSession:
    status = record.status if record.status != "creating" else "failed"
    return ComputeSession(
        provider=record.provider,
        external_id=record.external_id,
        key=record.id,
        status=status,
        labels={"sandbox_id": record.sandbox_id, "user_id": record.end_user_id},
        region=record.region,
    )


def at(epoch_seconds: float) -> datetime:
    return datetime.fromtimestamp(epoch_seconds, UTC)

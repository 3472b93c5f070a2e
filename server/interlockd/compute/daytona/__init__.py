"""Daytona sandboxes as compute (compute kind ``"daytona"``; the ``daytona`` extra).

This module describes the kind (its settings and ``build``) without loading the
SDK; ``provider`` runs sessions in sandboxes through it; ``sandboxes`` holds what
it knows of a sandbox without asking (names, labels, launch, status).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import SecretStr

from interlockd.compute.base import (
    ComputeDeps,
    ComputeKind,
    ComputeProvider,
    ComputeProviderSettings,
)


class DaytonaSettings(ComputeProviderSettings):
    """Runtimes in Daytona sandboxes."""

    kind: Literal["daytona"] = "daytona"
    #: The API's base URL (default: the public one).
    api_url: str = ""
    #: The API key.
    api_key: SecretStr | None = None
    #: The region of sessions that ask for none.
    target: str = ""
    #: The snapshot with the runtime installed ("": Daytona's default).
    snapshot: str = ""


def build(c: DaytonaSettings, deps: ComputeDeps) -> ComputeProvider:
    """The provider of one ``kind = "daytona"`` table; the SDK loads here."""
    from interlockd.compute.daytona.provider import DaytonaProvider

    options: dict[str, Any] = {"api_url": c.api_url} if c.api_url else {}
    if c.target:
        options["target"] = c.target
    return DaytonaProvider(
        api_key=c.api_key.get_secret_value() if c.api_key else "",
        snapshot=c.snapshot or None,
        **options,
    )


KIND = ComputeKind(DaytonaSettings, build)
